"""The two proxies the gateway mounts: `/instances/{i}/...` and the home fallback.

`/instances/{i}/...` reaches one instance's own ComfyUI, its editor included, without exposing
the instance's port: `GET /instances/0/` is that ComfyUI's `/`, and the editor's relative URLs
(`./assets/...`, `./api/...`, `ws://host/instances/0/ws`) stay under the prefix.

The home fallback answers every request the gateway has no route for from one instance (see
`_directory`), so the stock editor opened at `/` finds what it asks for beyond the API the
gateway implements (user settings, workflows, templates, extensions' files, translations, the
page and its assets). Paths under the gateway's own prefixes are never handed on: a typo in
`/v1/...` must be the gateway's 404, not an answer from ComfyUI.

Both run after the auth middleware, which has checked the key and removed the client's
credentials. A ComfyUI editor runs any graph outside the job queue and reads every output, so a
key needs `auth.ui_scope` (`admin` by default) to reach one; with keys off anyone may, as anyone
may reach the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter
from starlette.routing import Route, WebSocketRoute

from comfyfleet.auth import ADMIN, key_of
from comfyfleet.facades.instances._directory import InstanceDirectory
from comfyfleet.facades.instances._errors import ProxyError, not_found, refuse
from comfyfleet.facades.instances._headers import origin_matches
from comfyfleet.facades.instances._http import forward_http, new_client
from comfyfleet.facades.instances._websocket import bridge_websocket
from comfyfleet.jobs import Fleet, InstanceRecord

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/instances"
RESERVED_PREFIXES = (
    "/v1",
    "/api/v2",
    "/openai",
    "/dashboard",
    "/metrics",
    PREFIX,
    "/health",
    "/ready",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/login",
    "/logout",
)
"""Paths (and everything below them) that belong to the gateway and are never handed on."""


class InstanceProxy:
    """What both proxies share: the registry view, one pooled HTTP client, the scope a key
    needs (None: any key). Close it with :meth:`aclose` when the gateway stops."""

    def __init__(
        self,
        fleet: Callable[[], Awaitable[Fleet]],
        *,
        ui_scope: str | None = ADMIN,
        client: httpx.AsyncClient | None = None,
        fleet_ttl_s: float = 1.0,
    ) -> None:
        self.directory = InstanceDirectory(fleet, ttl_s=fleet_ttl_s)
        self.client = client or new_client()
        self.ui_scope = ui_scope

    async def aclose(self) -> None:
        await self.client.aclose()

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        target: Callable[[], Awaitable[InstanceRecord]],
        path: bytes,
        prefix: str,
    ) -> None:
        """Hand one request to the instance `target` picks, as `path` under `prefix`."""
        try:
            self._check(scope)
            record = await target()
        except ProxyError as error:
            await refuse(scope, receive, send, error)
            return
        try:
            if scope["type"] == "websocket":
                await bridge_websocket(
                    scope, receive, send, base_url=record.base_url, path=path, prefix=prefix
                )
            else:
                await forward_http(
                    self.client,
                    scope,
                    receive,
                    send,
                    base_url=record.base_url,
                    path=path,
                    prefix=prefix,
                )
        except ProxyError as error:  # raised only before anything was answered
            if error.status in (502, 504):
                self.directory.forget()
            await refuse(scope, receive, send, error, connected=scope["type"] == "websocket")

    def _check(self, scope: Scope) -> None:
        key = key_of(scope)
        if key is not None and self.ui_scope is not None and not key.allows(self.ui_scope):
            raise ProxyError(
                403,
                "forbidden",
                f"key {key.id} lacks the '{self.ui_scope}' scope this needs",
                {"needs": self.ui_scope, "hint": "a ComfyUI editor needs a key with that scope"},
            )
        if not origin_matches(scope):
            raise ProxyError(
                403,
                "cross_origin",
                "a browser request from another site's page is not handed to an instance",
                {"origin": _header(scope, b"origin")},
            )


def instances_router(proxy: InstanceProxy) -> APIRouter:
    """`/instances/{i}/...` (HTTP and WebSocket), and `/instances/{i}` sent on to `.../`."""
    router = APIRouter()
    app = _InstanceApp(proxy)
    router.routes.extend(
        [
            Route(f"{PREFIX}/{{ref}}", _AddSlash(), include_in_schema=False),
            Route(f"{PREFIX}/{{ref}}/{{rest:path}}", app, include_in_schema=False),
            WebSocketRoute(f"{PREFIX}/{{ref}}/{{rest:path}}", app),
        ]
    )
    return router


def home_proxy(proxy: InstanceProxy, reserved: Iterable[str] = RESERVED_PREFIXES) -> ASGIApp:
    """The gateway's fallback: any request no route took, handed to the home instance as it
    is; a path under a `reserved` prefix gets the gateway's 404."""
    prefixes = tuple(p.rstrip("/") for p in reserved)

    async def home(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        path = str(scope.get("path") or "/")
        if any(path == p or path.startswith(p + "/") for p in prefixes):
            await refuse(scope, receive, send, not_found())
            return
        await proxy.serve(
            scope,
            receive,
            send,
            target=proxy.directory.home,
            path=_raw_path(scope),
            prefix="",
        )

    return home


class _InstanceApp:
    """The ASGI endpoint of `/instances/{ref}/{rest}` (a class, so the router passes every
    method and the raw scope)."""

    def __init__(self, proxy: InstanceProxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ref = str(scope["path_params"]["ref"])
        raw = _raw_path(scope).split(b"/", 3)  # b"", b"instances", ref, rest
        rest = raw[3] if len(raw) > 3 else b""
        prefix = f"{PREFIX}/{raw[2].decode('latin-1') if len(raw) > 2 else ref}"

        async def target() -> InstanceRecord:
            return await self.proxy.directory.instance(ref)

        await self.proxy.serve(scope, receive, send, target=target, path=b"/" + rest, prefix=prefix)


class _AddSlash:
    """`/instances/0` -> `/instances/0/`: the editor's relative URLs need the slash. The
    Location is a path, right behind any proxy whatever scheme and host it uses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _add_slash(scope, send)


async def _add_slash(scope: Scope, send: Send) -> None:
    location = quote(str(scope.get("path") or ""), safe="/:@!$&'()*+,;=-._~") + "/"
    query = scope.get("query_string") or b""
    if query:
        location += "?" + query.decode("latin-1")
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 308, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _raw_path(scope: Scope) -> bytes:
    """The path as the client sent it (escapes kept, so `%2F` stays one segment)."""
    raw = scope.get("raw_path")
    if not raw:
        return quote(str(scope.get("path") or "/")).encode("latin-1")
    return bytes(raw).split(b"?", 1)[0]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
