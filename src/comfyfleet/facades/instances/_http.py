"""One HTTP request handed to an instance and its answer handed back, streamed both ways.

Nothing is buffered whole: the request body goes to the instance as the client sends it (httpx
pulls the next part from ASGI `receive` only when it has written the last one, and uvicorn stops
reading the socket while its small buffer is full), and the answer comes back part by part (each
`send` waits while the client's socket is full). So a slow or stalled client, in either
direction, holds one part in the proxy, not the whole body.

The answer is passed on raw, as the instance encoded it (gzip stays gzip, `Content-Length` stays
right). A client that goes away mid-answer ends the exchange at once instead of the proxy reading
the rest of the answer into the void. An instance that cannot be reached is a 502, one that does
not answer in time a 504; an instance that fails in the middle of its answer ends the
connection, so that the client sees a cut body rather than a short one that looks complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from comfyfleet.facades.instances._errors import ProxyError
from comfyfleet.facades.instances._headers import request_headers, response_headers, upstream_url
from comfyfleet.facades.instances._subpath import may_need_router_base, with_router_base

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("comfyfleet.gateway")


class ClientGone(Exception):
    """The client disconnected while its request body was being handed on."""


def new_client(
    *, connect_timeout_s: float = 10.0, read_timeout_s: float = 600.0
) -> httpx.AsyncClient:
    """The HTTP client every proxied request shares (pooled connections to the instances).

    `trust_env=False`: instances are reached directly, never through a proxy the environment
    names. The read limit is per wait for the next part of an answer, not for the whole answer.
    """
    timeout = httpx.Timeout(
        connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=connect_timeout_s
    )
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=32)
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, trust_env=False, follow_redirects=False
    )


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        lower = name.lower()
        if lower == b"transfer-encoding" or (lower == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def forward_http(
    client: httpx.AsyncClient,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    base_url: str,
    path: bytes,
    prefix: str,
) -> None:
    """Hand the request to the instance at `base_url` as `path` (raw, from `/`), the gateway
    having received it under `prefix`."""
    body_done = not _has_body(scope)

    async def body() -> AsyncIterator[bytes]:
        nonlocal body_done
        while not body_done:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            body_done = not message.get("more_body", False)
            if chunk:
                yield bytes(chunk)

    url = upstream_url(base_url, path, scope.get("query_string") or b"", websocket=False)
    method = scope.get("method", "GET")
    rewrite = bool(prefix) and may_need_router_base(method, path)
    headers = request_headers(scope, base_url=base_url, prefix=prefix)
    if rewrite:  # read whole and plain, to be changed before it is sent on
        headers = [(k, v) for k, v in headers if k.lower() != b"accept-encoding"]
        headers.append((b"accept-encoding", b"identity"))
    request = client.build_request(
        method, url, headers=headers, content=None if body_done else body()
    )
    try:
        response = await client.send(request, stream=True)
    except ClientGone:
        return
    except httpx.TimeoutException as exc:
        raise ProxyError(
            504, "instance_timeout", "the instance did not answer in time", {"url": base_url}
        ) from exc
    except httpx.TransportError as exc:
        raise ProxyError(
            502,
            "instance_unreachable",
            f"the instance could not be reached ({type(exc).__name__})",
            {"url": base_url},
        ) from exc
    try:
        if rewrite and response.status_code == 200:
            await _send_rewritten(response, send, base_url=base_url, prefix=prefix)
            return
        headers = response_headers(response.headers.raw, base_url=base_url, prefix=prefix)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        if body_done:
            await _until_either(_relay(response, send), _disconnected(receive))
        else:  # the instance answered before reading the whole body: nothing to watch
            await _relay(response, send)
    finally:
        await response.aclose()


async def _send_rewritten(
    response: httpx.Response, send: Send, *, base_url: str, prefix: str
) -> None:
    body = with_router_base(await response.aread())
    kept = [
        (name, value)
        for name, value in response_headers(response.headers.raw, base_url=base_url, prefix=prefix)
        if name.lower() not in (b"content-length", b"content-encoding", b"etag")
    ]
    kept.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": kept})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _relay(response: httpx.Response, send: Send) -> None:
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.TransportError:
        log.warning("an instance broke off its answer to %s", response.request.url.path)
        raise
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _until_either(relay: Awaitable[None], watch: Awaitable[None]) -> None:
    """Run the relay until it ends or the client leaves, whichever comes first; a relay that
    failed fails the request."""
    relaying = asyncio.ensure_future(relay)
    watching = asyncio.ensure_future(watch)
    try:
        await asyncio.wait({relaying, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relaying, watching):
            task.cancel()
        await asyncio.gather(relaying, watching, return_exceptions=True)
    error = None if relaying.cancelled() else relaying.exception()
    if error is not None:
        raise error
