"""`/v1/keys`: API keys, as `comfyfleet keys` manages them, for admin keys over HTTP.

The same key file as the CLI (`state/api_keys.json`), so a key made either way works at once on
every gateway that reads that file. A new key's text is in the answer to its creation and
nowhere else, ever (only its digest is kept): the answer says `no-store` so no cache keeps it.
Revoking ends the key's requests and browser sessions from the next request on. The static key
of the settings is listed but cannot be revoked here (it lives in the environment).

These routes manage the file whether or not the gateway asks for keys (`enabled` says which),
as the CLI does: keys can be made before auth is turned on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from comfyfleet.auth import (
    ADMIN,
    READ,
    SCOPES,
    STATIC_KEY_ID,
    SUBMIT,
    AuthError,
    KeyNotFound,
    KeyRecord,
    KeyStore,
    KeyStoreError,
)
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._json_models import body_doc, read_model
from comfyfleet.gateway._tenancy import needs

log = logging.getLogger("comfyfleet.gateway")


class NewKey(BaseModel):
    """What `POST /v1/keys` takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=64, description="who uses it, e.g. ci-pipeline (printable)"
    )
    scopes: list[str] = Field(
        default=[SUBMIT, READ],
        min_length=1,
        description=f"any of {', '.join(SCOPES)} (admin covers all)",
        json_schema_extra={"items": {"enum": list(SCOPES)}},
    )
    expires_in_s: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86_400, description="lifetime; null: until revoked"
    )
    max_running: int | None = Field(
        default=None, ge=1, le=1_000_000, description="its jobs running at once (null: default)"
    )


def keys_router(
    keys: KeyStore, *, enabled: bool, clock: Callable[[], float] = time.time
) -> APIRouter:
    router = APIRouter(tags=["keys"], dependencies=[Depends(needs(ADMIN))])

    def shown(record: KeyRecord) -> dict[str, Any]:
        return record.public_view(clock())

    @router.get("/v1/keys", summary="API keys (never their text)")
    async def list_keys() -> dict[str, Any]:
        records = await asyncio.to_thread(_call, keys.records)
        return {
            "enabled": enabled,
            "static_key": keys.has_static_key,
            "keys": [shown(record) for record in records],
        }

    @router.post(
        "/v1/keys",
        status_code=201,
        summary="Create an API key: its text is in this answer only",
        openapi_extra=body_doc(NewKey),
    )
    async def create_key(request: Request) -> JSONResponse:
        body = await read_model(request, NewKey)
        unknown = sorted(set(body.scopes) - set(SCOPES))
        if unknown:
            raise ApiError(
                422,
                "invalid_key_request",
                f"unknown scope {', '.join(map(repr, unknown))}",
                {"known": list(SCOPES)},
            )
        issued = await asyncio.to_thread(
            _call,
            keys.create,
            body.name,
            expires_in_s=body.expires_in_s,
            scopes=frozenset(body.scopes),
            max_running=body.max_running,
        )
        content = shown(issued.record) | {"key": issued.token}
        return JSONResponse(content, status_code=201, headers={"Cache-Control": "no-store"})

    @router.post("/v1/keys/{key_id}/revoke", summary="Revoke an API key from now on")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        if key_id == STATIC_KEY_ID:
            raise ApiError(
                409,
                "static_key",
                "the static key comes from the settings (auth.api_key): change it there",
                {"id": key_id},
            )
        return shown(await asyncio.to_thread(_call, keys.revoke, key_id))

    return router


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a key store call, its errors as API errors (which name no server path: the key
    file's place is the server's business, and its log says it)."""
    try:
        return function(*args, **kwargs)
    except KeyNotFound as exc:
        key_id = args[0] if args else "?"
        raise ApiError(404, "key_not_found", f"no API key '{key_id}'", {"id": key_id}) from exc
    except KeyStoreError as exc:
        log.error("the key file cannot be used: %s", exc)
        raise ApiError(
            503, "keys_unavailable", "the key file cannot be read or written; the log says why"
        ) from exc
    except AuthError as exc:
        raise ApiError(422, "invalid_key_request", exc.message, {"hint": exc.hint}) from exc
