"""What `comfyfleet doctor` asks of the backends a role would open: does the job store answer,
does every output store answer. Nothing is created or migrated: a SQLite store is opened
read-only when its file exists (and its folder checked for a write otherwise), a PostgreSQL one
gets one connection and `SELECT 1`, an output store its own `check()` round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from pathlib import Path

from comfyfleet.config import Settings
from comfyfleet.db import URL_SCHEMES, connect, redact
from comfyfleet.errors import ComfyfleetError
from comfyfleet.jobs import JobStoreError
from comfyfleet.provision import Check, write_error
from comfyfleet.storage import StorageError, StorageSettings, open_storage
from comfyfleet.workspace import Workspace

TIMEOUT_S = 15.0
"""Longest wait for one backend's answer: a firewalled host must not hang the doctor."""


def _sqlite_path(url: str, state_dir: Path) -> Path:
    rest = url.removeprefix("sqlite://").removeprefix("/")
    if rest in ("", "/"):
        return state_dir / "jobs.db"
    path = Path(rest).expanduser()
    return path if path.is_absolute() else state_dir / path


def _sqlite_check(path: Path) -> Check:
    if path.is_file():
        try:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.Error as exc:
            return Check("job store", "fail", f"SQLite {path} cannot be read: {exc}")
        return Check("job store", "ok", f"SQLite {path} ({tables} schema objects)")
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    try:
        if folder is None or not folder.is_dir():
            raise OSError(f"{path.parent} does not exist")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".comfyfleet-doctor-"):
            pass
    except OSError as exc:
        return Check("job store", "fail", f"SQLite {path} cannot be created: {exc}")
    return Check("job store", "ok", f"SQLite {path} (created at the first start)")


async def _postgres_check(url: str) -> Check:
    try:
        conn = await asyncio.wait_for(connect(url, JobStoreError, "job store"), TIMEOUT_S)
    except JobStoreError as exc:
        return Check("job store", "fail", exc.message)
    except TimeoutError:
        return Check("job store", "fail", f"{redact(url)} did not answer within {TIMEOUT_S:.0f}s")
    try:
        row = await (await conn.execute("SELECT version() AS v")).fetchone()
    finally:
        await conn.close()
    version = str(row["v"]).split(" on ")[0] if row else "?"
    return Check("job store", "ok", f"{redact(url)} answers ({version})")


async def store_check(url: str, ws: Workspace) -> Check:
    """Whether the job store `url` can be reached, in one line."""
    if url == "memory://":
        return Check("job store", "warn", "memory:// keeps jobs in memory: they are lost on exit")
    if url.startswith("sqlite://"):
        return await asyncio.to_thread(_sqlite_check, _sqlite_path(url, ws.state_dir))
    if url.startswith(URL_SCHEMES):
        return await _postgres_check(url)
    return Check("job store", "fail", f"'{url}' is not a job store URL")


async def storage_check(name: str, settings: StorageSettings, ws: Workspace) -> Check:
    """Whether the output store answers (one round trip of its own)."""
    what = "output storage" if name == "default" else f"output storage '{name}'"
    target = settings.target
    if target.kind == "local":  # looked at, not created (the volume checks cover the default)
        folder = Path(target.location) if target.location else ws.output_dir
        existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        error = write_error(existing)
        if error is not None:
            return Check(what, "fail", f"{settings.url}: {existing} is not writable ({error})")
        return Check(what, "ok", f"{settings.url}: local folder {folder}")
    try:
        storage = open_storage(settings, local_root=ws.output_dir)
    except ComfyfleetError as exc:
        return Check(what, "fail", f"{settings.url}: {exc}")
    try:
        await asyncio.wait_for(storage.check(), TIMEOUT_S)
    except StorageError as exc:
        return Check(what, "fail", f"{settings.url}: {exc}")
    except TimeoutError:
        return Check(what, "fail", f"{settings.url} did not answer within {TIMEOUT_S:.0f}s")
    finally:
        await storage.close()
    return Check(what, "ok", f"{settings.url} answers")


async def reachability_checks(settings: Settings, ws: Workspace) -> list[Check]:
    """The job store, then the default output store and every named one."""
    targets = {"default": settings.storage, **settings.storage_targets}
    results = await asyncio.gather(
        store_check(settings.serve.store, ws),
        *(storage_check(name, target, ws) for name, target in targets.items()),
    )
    return list(results)
