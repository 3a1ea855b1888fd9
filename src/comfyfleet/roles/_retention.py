"""Retention in the roles: the periodic prune every long-running process runs, and `gc`.

Each process prunes its own workspace's files and, when it holds the store's `retention`
lease, the store's records (see `comfyfleet.retention._task`): `serve`, every `gateway` (whose
input folder holds the uploads it received) and every `agent` (whose output folder holds what
its instances wrote).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

from comfyfleet.assets import AssetStore
from comfyfleet.config import Settings
from comfyfleet.errors import ConfigError, WorkspaceError
from comfyfleet.jobs import JobStore, Registry, open_registry, open_store
from comfyfleet.retention import Disk, Pruner, Records, Report, RetentionTask
from comfyfleet.roles._backends import Backends, _open_outbox
from comfyfleet.webhooks import Outbox
from comfyfleet.workspace import Workspace

GC_WAIT_S = 60.0
"""How long `gc` waits for a prune in progress in another process."""


def retention_task(
    settings: Settings,
    ws: Workspace,
    store: JobStore,
    registry: Registry,
    outbox: Outbox,
    assets: AssetStore,
    *,
    holder: str,
) -> RetentionTask:
    limits = settings.retention
    disk = Disk(
        assets,
        ws.output_dir,
        temp_dirs=lambda: sorted(ws.root.glob("instances/*/temp")),
        shown_from=ws.root,
    )
    pruner = Pruner(limits, store, Records(store, outbox, registry), disk)
    return RetentionTask(
        pruner,
        registry,
        holder,
        lock_file=ws.state_dir / "retention.lock",
        interval_s=limits.interval or 0.0,
    )


def start_retention(settings: Settings, ws: Workspace, backends: Backends) -> RetentionTask | None:
    """Prune every `retention.interval` in this process; None when that is off."""
    if settings.retention.interval is None:
        return None
    b = backends
    task = retention_task(
        settings, ws, b.store, b.registry, b.outbox, b.assets, holder=_holder("prune")
    )
    task.start()
    return task


async def run_gc(settings: Settings, *, dry_run: bool) -> Report:
    """`comfyfleet gc`: one prune (or dry run) of the workspace's store and folders."""
    ws = Workspace.from_settings(settings)
    if not ws.root.is_dir():
        raise WorkspaceError(
            f"workspace {ws.root} does not exist", hint="pass the workspace with --workspace"
        )
    if settings.serve.store == "memory://":
        raise ConfigError(
            "gc cannot reach a memory:// store: it lives inside the process that serves it",
            hint="prune it from that process (retention.interval), or use a durable store",
        )
    async with _opened(settings, ws) as (store, registry, outbox):
        assets = AssetStore(ws.input_dir)
        task = retention_task(settings, ws, store, registry, outbox, assets, holder=_holder("gc"))
        return await task.run_once(wait_s=GC_WAIT_S, dry_run=dry_run)


@contextlib.asynccontextmanager
async def _opened(
    settings: Settings, ws: Workspace
) -> AsyncIterator[tuple[JobStore, Registry, Outbox]]:
    url = settings.serve.store
    store = await open_store(url, default_dir=ws.state_dir)
    try:
        registry = await open_registry(store, url)
        try:
            outbox = await _open_outbox(store, url)
            try:
                yield store, registry, outbox
            finally:
                await outbox.close()
        finally:
            await registry.close()
    finally:
        await store.close()


def _holder(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
