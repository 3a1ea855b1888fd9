"""The sign-in page: `GET /login` shows a form, `POST /login` trades a key for a session cookie,
`POST /logout` clears it.

Small server-rendered HTML that works without JavaScript: a person pastes a key, the browser gets
the cookie (see `_session`) and is sent back to where it was going (`next`). `next` is only ever
a path on this site (:func:`safe_next`), so the page cannot be used to send people elsewhere
(an open redirect). The form posts to itself; a post that a browser marks as coming from another
site is refused, so no page elsewhere can sign a visitor in or out.

These answers are plain ASGI, like the middleware that calls them: they run before the app, with
no key needed (a sign-in page that asked for a key would be of no use).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote

from comfyfleet.auth._keys import KeyRecord
from comfyfleet.auth._session import (
    SESSION_COOKIE,
    Sessions,
    cross_site,
    header,
    is_https,
    session_cookie,
)
from comfyfleet.errors import ComfyfleetError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
KeyCheck = Callable[[str], KeyRecord | None]

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
MAX_FORM_BYTES = 8192
_MAX_NEXT = 2048
_URL_SAFE = "/?&=%#:@!$'()*+,;~-._"

log = logging.getLogger("comfyfleet.auth")


def safe_next(value: str | None) -> str:
    """`value` when it is a path on this site, else `/`. Refused: anything with a scheme or a
    host (`https://x`, `//x`, and `/\\x`, which browsers read as `//x`), control characters,
    and very long values."""
    if (
        not value
        or len(value) > _MAX_NEXT
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        return "/"
    return quote(value, safe=_URL_SAFE)


def login_url(scope: Scope) -> str:
    """`/login?next=<this request's path and query>`."""
    target = quote(scope.get("path") or "/", safe=_URL_SAFE)
    query = scope.get("query_string") or b""
    if query:
        target += "?" + query.decode("latin-1")
    return f"{LOGIN_PATH}?next={quote(target, safe='')}"


async def redirect_to_login(scope: Scope, send: Send, *, clear: bool) -> None:
    """Send a browser to the sign-in page, forgetting a stale cookie when `clear`."""
    headers = [(b"location", login_url(scope).encode("latin-1")), (b"cache-control", b"no-store")]
    if clear:
        headers.append((b"set-cookie", clear_cookie(scope)))
    await _answer(send, 303, b"", headers, content_type=b"text/plain; charset=utf-8")


def session_cookie_header(scope: Scope, value: str, max_age: int) -> bytes:
    """`Set-Cookie` for a session: HttpOnly (no script reads it), SameSite=Lax (not sent on
    other sites' subrequests and posts), Secure when the browser came over https."""
    parts = [
        f"{SESSION_COOKIE}={value}",
        "Path=/",
        f"Max-Age={max(max_age, 0)}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if is_https(scope):
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def clear_cookie(scope: Scope) -> bytes:
    return session_cookie_header(scope, "", 0)


async def login_pages(
    scope: Scope, receive: Receive, send: Send, *, keys: KeyCheck, sessions: Sessions
) -> None:
    """Answer an HTTP request for `/login` or `/logout`."""
    method = scope.get("method", "GET")
    path = scope.get("path")
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    if path == LOGOUT_PATH:
        if method != "POST":
            await _page(send, 405, _form_page("/"), [(b"allow", b"POST")])
            return
        if cross_site(scope):
            await _page(send, 403, _message_page("That sign-out came from another site."))
            return
        headers = [(b"location", LOGIN_PATH.encode()), (b"set-cookie", clear_cookie(scope))]
        await _answer(send, 303, b"", headers, content_type=b"text/plain; charset=utf-8")
        return
    if method in ("GET", "HEAD"):
        target = safe_next((query.get("next") or ["/"])[0])
        record = _current_session(scope, sessions)
        page = _signed_in_page(record, target) if record else _form_page(target)
        await _page(send, 200, page, head_only=method == "HEAD")
        return
    if method != "POST":
        await _page(send, 405, _form_page("/"), [(b"allow", b"GET, HEAD, POST")])
        return
    await _sign_in(scope, receive, send, keys=keys, sessions=sessions)


async def _sign_in(
    scope: Scope, receive: Receive, send: Send, *, keys: KeyCheck, sessions: Sessions
) -> None:
    if cross_site(scope):
        await _page(send, 403, _message_page("That sign-in came from another site."))
        return
    body = await _read_form(receive)
    if body is None:
        await _page(send, 413, _message_page("That form was too large."))
        return
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    target = safe_next((fields.get("next") or ["/"])[0])
    key = (fields.get("key") or [""])[0].strip()
    try:
        record = keys(key) if key else None
    except ComfyfleetError as exc:
        log.error("cannot check API keys: %s", exc)
        page = _form_page(target, "Keys cannot be checked right now; the server log says why.")
        await _page(send, 503, page)
        return
    if record is None:
        client = (scope.get("client") or ("-", 0))[0]
        log.info("refused a sign-in from %s: %s", client, "no key" if not key else "invalid key")
        error = "That key is not valid (unknown, revoked or expired)."
        error = error if key else "Enter an API key."
        await _page(send, 401, _form_page(target, error))
        return
    cookie = session_cookie_header(scope, sessions.issue(record), int(sessions.ttl_s))
    log.info("key %s signed in a browser", record.id)
    headers = [(b"location", target.encode("latin-1")), (b"set-cookie", cookie)]
    await _answer(send, 303, b"", headers, content_type=b"text/plain; charset=utf-8")


def _current_session(scope: Scope, sessions: Sessions) -> KeyRecord | None:
    value = session_cookie(scope)
    if not value:
        return None
    try:
        return sessions.verify(value)
    except ComfyfleetError:
        return None


async def _read_form(receive: Receive) -> bytes | None:
    """The request body, or None once it passes MAX_FORM_BYTES."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += bytes(message.get("body", b""))
        if len(body) > MAX_FORM_BYTES:
            return None
        if not message.get("more_body", False):
            return body


# --- pages ------------------------------------------------------------------------------------

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;background:#f4f4f5;color:#18181b;margin:0}
main{max-width:26rem;margin:12vh auto;background:#fff;padding:2rem;border-radius:.75rem;
box-shadow:0 1px 3px rgba(0,0,0,.15)}
h1{font-size:1.4rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin-bottom:.35rem}
input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font:inherit;
border:1px solid #a1a1aa;border-radius:.4rem}
button{margin-top:1rem;padding:.6rem 1.2rem;font:inherit;border:0;border-radius:.4rem;
background:#2563eb;color:#fff;cursor:pointer}
.error{background:#fee2e2;color:#991b1b;padding:.6rem;border-radius:.4rem}
.hint{color:#52525b;font-size:.9rem}
@media (prefers-color-scheme:dark){body{background:#18181b;color:#f4f4f5}
main{background:#27272a}input[type=password]{background:#18181b;color:#f4f4f5}
.hint{color:#a1a1aa}}
"""


def _document(title: str, content: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · comfyfleet</title><style>{_STYLE}</style></head>"
        f"<body><main>{content}</main></body></html>"
    ).encode()


def _form_page(target: str, error: str | None = None) -> bytes:
    shown = f"<p class=error role=alert id=error>{html.escape(error)}</p>" if error else ""
    return _document(
        "Sign in",
        "<h1>Sign in to comfyfleet</h1>"
        f"{shown}"
        f'<form method=post action="{LOGIN_PATH}">'
        f'<input type=hidden name=next value="{html.escape(target)}">'
        "<label for=key>API key</label>"
        "<input type=password id=key name=key autocomplete=current-password required autofocus"
        ' placeholder="cf_...">'
        "<button type=submit>Sign in</button></form>"
        "<p class=hint>Use a key made with <code>comfyfleet keys create</code>. "
        "The browser keeps a session cookie; revoking the key ends it.</p>",
    )


def _signed_in_page(record: KeyRecord, target: str) -> bytes:
    return _document(
        "Signed in",
        "<h1>Signed in</h1>"
        f"<p>This browser uses key <strong>{html.escape(record.id)}</strong> "
        f"({html.escape(record.name)}).</p>"
        f'<p><a href="{html.escape(target)}">Continue</a></p>'
        f'<form method=post action="{LOGOUT_PATH}"><button type=submit>Sign out</button></form>',
    )


def _message_page(text: str) -> bytes:
    return _document(
        "Refused", f'<h1>Refused</h1><p>{html.escape(text)}</p><p><a href="/login">Sign in</a></p>'
    )


_PAGE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
]


async def _page(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head_only: bool = False,
) -> None:
    await _answer(
        send,
        status,
        body,
        [*_PAGE_HEADERS, *(headers or [])],
        content_type=b"text/html; charset=utf-8",
        head_only=head_only,
    )


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    content_type: bytes,
    head_only: bool = False,
) -> None:
    head = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


def wants_html(scope: Scope) -> bool:
    """Whether this is a browser loading a page: a GET or HEAD that accepts HTML."""
    return (
        scope["type"] == "http"
        and scope.get("method") in ("GET", "HEAD")
        and "text/html" in (header(scope, b"accept") or "").lower()
    )
