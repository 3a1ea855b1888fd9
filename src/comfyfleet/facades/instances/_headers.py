"""Which headers cross the proxy, in each direction, and how they change on the way.

Towards the instance:

- hop-by-hop headers (RFC 9110 7.6.1: `Connection` and the headers it names, `Keep-Alive`,
  `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) belong to one connection and are
  dropped; the HTTP client frames the body again itself;
- `Host` becomes the instance's (the HTTP client sets it);
- the client's credentials never reach an instance: `Authorization` and the gateway's session
  cookie are dropped (the auth middleware already removed them; this is the second line);
- `Origin` is rewritten to the instance's own origin. ComfyUI refuses (403) a request whose
  `Origin` does not match its `Host` when it listens on loopback, to stop other websites from
  queueing work on a local ComfyUI; behind the gateway the host always differs, so the proxy
  makes the same check itself first (:func:`origin_matches`, against the gateway's own host)
  and hands on an `Origin` that ComfyUI accepts;
- `X-Forwarded-For`, `-Proto`, `-Host` and `-Prefix` say who asked and where the instance is
  mounted; the client's own copies are dropped, since anyone can write them.

Back to the client: hop-by-hop headers are dropped, a `Location` that points into the instance is
rewritten under the prefix, and an instance cannot set the gateway's session cookie.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.auth import SESSION_COOKIE, same_origin, without_session_cookie

Headers = list[tuple[bytes, bytes]]
Scope = MutableMapping[str, Any]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = frozenset(
    {
        b"host",
        b"authorization",
        b"origin",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-prefix",
    }
)
_WEBSOCKET_OWN = (b"sec-websocket-",)
"""The WebSocket handshake's own headers: the upstream handshake makes its own."""


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names a `Connection` header lists (they are hop-by-hop too)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named)


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """`headers` without the hop-by-hop ones."""
    listed = list(headers)
    named = _connection_tokens(listed)
    return [(k, v) for k, v in listed if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def origin_of(base_url: str) -> str:
    """`scheme://host:port` of a URL."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def origin_matches(scope: Scope) -> bool:
    """Whether a request may be handed to an instance as far as its `Origin` goes: no `Origin`
    (not a browser's cross-origin request), or the gateway's own."""
    has_origin = any(name.lower() == b"origin" for name, _ in scope.get("headers") or ())
    return not has_origin or same_origin(scope)


def request_headers(scope: Scope, *, base_url: str, prefix: str) -> Headers:
    """The headers to send the instance at `base_url` for a request the gateway got at `prefix`
    (`""` for the home instance)."""
    websocket = scope["type"] == "websocket"
    headers = []
    origin = False
    host = None
    for name, value in end_to_end(scope.get("headers") or ()):
        lower = name.lower()
        if lower == b"origin":
            origin = True
        if lower == b"host":
            host = value
        if lower in _NOT_FORWARDED or (websocket and lower.startswith(_WEBSOCKET_OWN)):
            continue
        headers.append((lower, value))
    headers = without_session_cookie(headers)
    if origin:
        headers.append((b"origin", origin_of(base_url).encode("latin-1")))
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
    scheme = str(scope.get("scheme") or "http")
    secure = scheme in ("https", "wss")
    headers.append((b"x-forwarded-proto", b"https" if secure else b"http"))
    if host is not None:
        headers.append((b"x-forwarded-host", host))
    if prefix:
        headers.append((b"x-forwarded-prefix", prefix.encode("latin-1")))
    return headers


def response_headers(
    headers: Iterable[tuple[bytes, bytes]], *, base_url: str, prefix: str
) -> Headers:
    """The instance's response headers as the client gets them."""
    kept = []
    for name, value in end_to_end(headers):
        lower = name.lower()
        if lower == b"set-cookie" and _cookie_name(value) == SESSION_COOKIE.encode():
            continue
        if lower == b"location":
            value = rewrite_location(value.decode("latin-1"), base_url, prefix).encode("latin-1")
        kept.append((lower, value))
    return kept


def rewrite_location(location: str, base_url: str, prefix: str) -> str:
    """A redirect of the instance's as the client must follow it: an absolute URL into the
    instance, or a path from its root, is put under `prefix`; anything else (a relative
    reference, another site) is left as it is."""
    origin = origin_of(base_url)
    if location.startswith(origin) and location[len(origin) : len(origin) + 1] in ("", "/", "?"):
        location = location[len(origin) :] or "/"
        if not location.startswith("/"):
            location = "/" + location
        return prefix + location
    if location.startswith("/") and not location.startswith("//"):
        return prefix + location
    return location


def _cookie_name(set_cookie: bytes) -> bytes:
    return set_cookie.split(b";", 1)[0].partition(b"=")[0].strip()


def upstream_url(base_url: str, path: bytes, query: bytes, *, websocket: bool) -> str:
    """The URL of `path` (raw, from `/`) and `query` on the instance at `base_url`."""
    url = base_url.rstrip("/") + path.decode("latin-1")
    if query:
        url += "?" + query.decode("latin-1")
    if websocket:
        url = "ws" + url[4:] if url.startswith("http") else url
    return url
