"""Choose a job store from its URL, as the settings name it."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.db import URL_SCHEMES
from comfyfleet.jobs._fleet import Registry
from comfyfleet.jobs._fleet_memory import MemoryRegistry
from comfyfleet.jobs._fleet_postgres import PostgresRegistry
from comfyfleet.jobs._fleet_sqlite import SqliteRegistry
from comfyfleet.jobs._memory import MemoryJobStore
from comfyfleet.jobs._model import JobStoreError
from comfyfleet.jobs._postgres import PostgresJobStore
from comfyfleet.jobs._sqlite import SqliteJobStore
from comfyfleet.jobs._store import JobStore

DEFAULT_FILE = "jobs.db"

_FORMS = (
    "sqlite:// (jobs.db in the workspace), sqlite:///relative/path.db (from the workspace), "
    "sqlite:////absolute/path.db, postgresql://user:password@host:5432/database (several "
    "machines), or memory:// (lost on exit)"
)


async def open_store(url: str, *, default_dir: Path) -> JobStore:
    """The store `url` names. SQLite paths follow SQLAlchemy's rule (which ComfyUI's own
    `--database-url` uses too): three slashes then a relative path, four for an absolute one.

    `postgresql://` and `postgres://` URLs are libpq's (query parameters such as `sslmode` or
    `options` pass through); one that cannot be reached is a JobStoreError naming it without
    its password. Async because a network store has to connect."""
    if url == "memory://":
        return MemoryJobStore()
    if url in ("sqlite://", "sqlite:///"):
        return SqliteJobStore.open(default_dir / DEFAULT_FILE)
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        if rest == ":memory:":
            raise JobStoreError(
                "an in-memory SQLite job store is not supported", hint="use memory:// instead"
            )
        path = Path(rest).expanduser()
        return SqliteJobStore.open(path if path.is_absolute() else default_dir / path)
    if url.startswith(URL_SCHEMES):
        return await PostgresJobStore.open(url)
    if url.startswith(("redis://", "rediss://")):
        raise JobStoreError(
            "the redis store is not available yet",
            hint="use sqlite:// (the default), postgresql:// or memory://",
        )
    raise JobStoreError(f"unknown job store URL '{url}'", hint=f"use {_FORMS}")


async def open_registry(store: JobStore, url: str) -> Registry:
    """The fleet registry that lives where `store` does (opened from `url` for PostgreSQL):
    gateways and agents that share a store share its registry too."""
    if isinstance(store, SqliteJobStore):
        return SqliteRegistry.open(store.path)
    if isinstance(store, PostgresJobStore):
        return await PostgresRegistry.open(url)
    return MemoryRegistry()
