"""The `/v1` API as the person viewing a page sees it, called inside the process.

The dashboard has no private API: a page shows what `/v1` answers, and every button is a `/v1`
call the browser makes itself. To render a page, the server asks the same app the browser talks
to, in-process (no socket), as the signed-in key: the key the auth middleware verified is handed
on in the ASGI scope exactly as the middleware hands it to every route, so each answer is what
that key may see (its own jobs, admin routes refused) and nothing is shown that `/v1` would not
show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from comfyfleet.auth import SCOPE_KEY, STATE_KEY, KeyRecord


@dataclass(frozen=True)
class Answer:
    """One `/v1` answer: its status and its JSON (None when it was not JSON)."""

    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The API's error message, as a person reads it."""
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            return str(self.data["error"].get("message") or self.data["error"].get("code"))
        return f"the API answered {self.status}"

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default) if self.ok and isinstance(self.data, dict) else default


class _AsCaller:
    """The app, called with `key` in the scope where the auth middleware would put it."""

    def __init__(self, app: ASGIApp, key: KeyRecord | None) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = dict(scope)
        if self.key is not None:
            inner[SCOPE_KEY] = self.key
            inner["state"] = {**(scope.get("state") or {}), STATE_KEY: self.key}
        await self.app(inner, receive, send)


class Api:
    """`async with Api(app, key) as api: await api.get("/v1/instances")`."""

    def __init__(self, app: ASGIApp, key: KeyRecord | None) -> None:
        transport = httpx.ASGITransport(app=_AsCaller(app, key))
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://dashboard", headers={"Accept": "application/json"}
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, path: str, **params: Any) -> Answer:
        shown = {k: v for k, v in params.items() if v is not None and v != ""}
        response = await self._client.get(path, params=shown)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        return Answer(response.status_code, data)
