"""Building what `serve` runs on from the settings: job store, webhook outbox, output stores,
input assets and API keys. Each is opened once here and handed down; nothing else opens one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from comfyfleet.assets import (
    INPUT_TOO_LARGE,
    AssetResolver,
    AssetStore,
    MediaInputError,
    ObjectReader,
    UrlFetcher,
)
from comfyfleet.auth import KeyStore, open_key_store
from comfyfleet.config import Settings
from comfyfleet.jobs import (
    JobOptions,
    JobStore,
    MemoryJobStore,
    PostgresJobStore,
    Registry,
    SqliteJobStore,
    open_registry,
    open_store,
)
from comfyfleet.storage import (
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    StorageSettings,
    open_storage,
    read_url,
)
from comfyfleet.webhooks import (
    MemoryOutbox,
    Outbox,
    PostgresOutbox,
    SqliteOutbox,
    WebhookSettings,
    generate_secret,
)
from comfyfleet.workspace import Workspace

log = logging.getLogger("comfyfleet.gateway")

OUTPUTS_URL = "/v1/outputs/"


@dataclass
class Backends:
    store: JobStore
    registry: Registry
    """The fleet registry, in the store's database: how gateways and agents know each other."""
    outbox: Outbox
    webhooks: WebhookSettings
    targets: dict[str, Storage]
    """Every output store by name, the configured default one as "default"."""
    assets: AssetStore
    media: AssetResolver
    keys: KeyStore | None

    @property
    def storage(self) -> Storage:
        return self.targets["default"]

    def storage_for(self, options: JobOptions) -> Storage:
        """The store a job's options name (checked at submit), else the default one."""
        return self.targets.get(options.storage or "default", self.storage)


@contextlib.asynccontextmanager
async def open_backends(settings: Settings, ws: Workspace) -> AsyncIterator[Backends]:
    store = await open_store(settings.serve.store, default_dir=ws.state_dir)
    registry: Registry | None = None
    try:
        registry = await open_registry(store, settings.serve.store)
        outbox = await _open_outbox(store, settings.serve.store)
        configured = settings.storage_targets | {"default": settings.storage}
        targets = {
            name: open_storage(each, local_root=ws.output_dir, local_base_url=OUTPUTS_URL)
            for name, each in configured.items()
        }
        assets = AssetStore(ws.input_dir, max_bytes=settings.assets.max_upload_bytes)
        fetcher = UrlFetcher.from_settings(
            settings.assets, readers=_object_readers(settings.storage)
        )
        media = AssetResolver(assets, fetcher, max_inline_bytes=settings.assets.max_upload_bytes)
        keys = open_key_store(settings.auth, ws.state_dir) if settings.auth.enabled else None
        if keys is not None and not keys.records() and not keys.has_static_key:
            log.warning(
                "API keys are required but none exist: create one with `comfyfleet keys create`"
            )
        backends = Backends(
            store=store,
            registry=registry,
            outbox=outbox,
            webhooks=_with_secret(settings.webhooks, ws.state_dir),
            targets=targets,
            assets=assets,
            media=media,
            keys=keys,
        )
        try:
            yield backends
        finally:
            for each in targets.values():
                with contextlib.suppress(Exception):
                    await each.close()
            await outbox.close()
    finally:
        if registry is not None:
            await registry.close()
        await store.close()


async def _open_outbox(store: JobStore, url: str) -> Outbox:
    """The outbox lives where the store does (its relay cursor next to the rows it writes)."""
    if isinstance(store, SqliteJobStore):
        return SqliteOutbox.open(store.path)
    if isinstance(store, PostgresJobStore):
        return await PostgresOutbox.open(url)
    assert isinstance(store, MemoryJobStore)
    return MemoryOutbox()


def _with_secret(settings: WebhookSettings, state_dir: Path) -> WebhookSettings:
    """Signing needs a secret: the configured one, else one generated once and kept in the
    workspace (`state/webhook_secret`, readable by its owner only) for receivers to use."""
    if settings.secret is not None:
        return settings
    path = state_dir / "webhook_secret"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_secret() + "\n")
        tmp.replace(path)
        log.warning(
            "generated a webhook signing secret in %s (set webhooks.secret to choose one)", path
        )
    return settings.model_copy(update={"secret": SecretStr(path.read_text().strip())})


def _object_readers(settings: StorageSettings) -> dict[str, ObjectReader]:
    """s3:// and az:// inputs, read with the output store's credentials."""

    async def read(url: str, max_bytes: int) -> bytes:
        try:
            return await read_url(url, settings, max_bytes=max_bytes)
        except ObjectNotFound as exc:
            raise FileNotFoundError(url) from exc
        except ObjectTooLarge as exc:
            raise MediaInputError(
                INPUT_TOO_LARGE, f"{url} is larger than {max_bytes} bytes"
            ) from exc

    return {"s3": read, "az": read}
