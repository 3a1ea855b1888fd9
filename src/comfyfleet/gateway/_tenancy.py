"""Who may see and do what: API keys own their jobs and assets, scopes gate the routes.

The caller of a request is the key the middleware verified (`comfyfleet.auth.key_of`), or nobody
when keys are off. The rules, in one place so that every route applies the same ones:

- keys off: there is no one to tell apart, so every request sees everything (as before keys);
- a key sees and acts on the jobs and assets it submitted; a key with `admin` sees all of them,
  including those submitted while keys were off or before jobs had owners;
- another key's job answers exactly as a job that does not exist (`job_not_found`), so job ids
  cannot be probed; another key's asset answers as an asset that does not exist;
- a route that needs a scope the key lacks answers 403 `forbidden`, `details.needs` naming it.

Idempotency keys are turned into job ids with an HMAC under a secret generated once into the
workspace (`state/idempotency_secret`): key ids are not secret, so a plain hash of key id and
`Idempotency-Key` would let anyone compute, and take first, another key's job id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import WebSocket
from starlette.requests import HTTPConnection

from comfyfleet.assets import Asset, AssetNotFound, AssetResolver, AssetStore, MediaResolver
from comfyfleet.auth import ADMIN, KeyRecord, kept_secret, key_of
from comfyfleet.gateway._errors import ApiError, error_response
from comfyfleet.jobs import Job, JobNotFound, JobStore

log = logging.getLogger("comfyfleet.gateway")

IDEMPOTENCY_SECRET_FILE = "idempotency_secret"
_SECRET_BYTES = 32
_CLOSE_POLICY_VIOLATION = 1008


@dataclass(frozen=True)
class Caller:
    """The key behind a request; `key` None when keys are off."""

    key: KeyRecord | None

    @property
    def owner(self) -> str | None:
        """What this caller's jobs and assets are recorded under (None: anonymous)."""
        return None if self.key is None else self.key.id

    @property
    def sees_all(self) -> bool:
        return self.key is None or self.key.allows(ADMIN)

    def allows(self, scope: str) -> bool:
        return self.key is None or self.key.allows(scope)

    def can_see(self, owner: str | None) -> bool:
        return self.sees_all or owner == self.owner

    def max_running(self, default: int | None) -> int | None:
        """How many of this caller's jobs may run at once: the key's own limit, else `default`
        (`serve.max_running_per_key`); None without keys (there is no one to share with)."""
        if self.key is None:
            return None
        return self.key.max_running if self.key.max_running is not None else default

    @property
    def list_filter(self) -> str | None:
        """The owner a job listing is limited to (None: every job)."""
        return None if self.sees_all else self.owner


def caller_of(conn: HTTPConnection) -> Caller:
    return Caller(key_of(conn.scope))


def forbidden(caller: Caller, scope: str) -> ApiError:
    key = "this key" if caller.key is None else f"key {caller.key.id}"
    return ApiError(
        403,
        "forbidden",
        f"{key} lacks the '{scope}' scope this needs",
        {"needs": scope, "hint": "use a key created with `comfyfleet keys create --scope ...`"},
    )


def needs(scope: str) -> Callable[[HTTPConnection], Caller]:
    """A FastAPI dependency: the caller, or 403 when its key lacks `scope`."""

    def checked_caller(conn: HTTPConnection) -> Caller:
        caller = caller_of(conn)
        if not caller.allows(scope):
            raise forbidden(caller, scope)
        return caller

    return checked_caller


async def socket_caller(websocket: WebSocket, scope: str) -> Caller | None:
    """The caller of a WebSocket, or None once the handshake was refused (403) for `scope`."""
    caller = caller_of(websocket)
    if caller.allows(scope):
        return caller
    error = forbidden(caller, scope)
    if "websocket.http.response" in (websocket.scope.get("extensions") or {}):
        answer = error_response(error.status, error.code, error.message, error.details)
        await websocket.send_denial_response(answer)
    else:
        await websocket.close(_CLOSE_POLICY_VIOLATION, error.code)
    return None


# --- jobs -------------------------------------------------------------------------------------


async def visible_job(store: JobStore, job_id: str, caller: Caller) -> Job:
    """The job, or :class:`JobNotFound` both when there is none and when it is not the
    caller's: the two must not be told apart."""
    job = await store.get(job_id)
    if not caller.can_see(job.owner):
        raise JobNotFound(job_id)
    return job


# --- assets -----------------------------------------------------------------------------------


def visible_asset(store: AssetStore, asset_id: str, caller: Caller) -> Asset:
    """The asset as the caller uploaded it; :class:`AssetNotFound` when it is not theirs."""
    if caller.sees_all or caller.owner is None:
        return store.get(asset_id)
    return store.get_for(asset_id, caller.owner)


def remove_asset(store: AssetStore, asset_id: str, caller: Caller) -> None:
    """An admin (or anyone, keys off) deletes the asset; a key gives up its ownership, and the
    bytes stay while another key still owns them."""
    if caller.sees_all or caller.owner is None:
        store.delete(asset_id)
    else:
        store.release(asset_id, caller.owner)


class _OwnAssetsOnly:
    """A :class:`MediaResolver` that lets a graph name only the caller's own assets."""

    def __init__(self, inner: AssetResolver, owner: str) -> None:
        self._inner = inner
        self._owner = owner

    async def url(self, url: str) -> str:
        return await self._inner.url(url)

    async def data(self, data: bytes) -> str:
        return await self._inner.data(data)

    async def asset(self, asset_id: str) -> str:
        if not self._inner.store.owns(asset_id, self._owner):
            raise AssetNotFound.for_id(asset_id)
        return await self._inner.asset(asset_id)


def media_for(media: MediaResolver, caller: Caller) -> MediaResolver:
    """The resolver a caller's graph goes through: asset ids limited to its own assets."""
    if caller.sees_all or caller.owner is None or not isinstance(media, AssetResolver):
        return media
    return _OwnAssetsOnly(media, caller.owner)


# --- idempotency ------------------------------------------------------------------------------


def idempotency_secret(state_dir: Path) -> bytes:
    """The server's idempotency secret: `state/idempotency_secret`, made once (mode 0600) and
    kept, so that a retried request maps to the same job after a restart."""
    return kept_secret(state_dir / IDEMPOTENCY_SECRET_FILE)
