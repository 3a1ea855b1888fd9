"""HTTP GETs for the downloader: stdlib `http.client` on worker threads.

Why not httpx here: moving gigabytes through h11 costs several times the CPU of
`HTTPResponse.readinto`, and the downloader must keep up with `curl` while it also hashes. Each
worker thread owns one :class:`HttpSession` (one keep-alive connection per origin). Redirects are
followed by hand so that a token never travels to another host (Hugging Face and Civitai redirect
to signed CDN URLs that need none).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from urllib.parse import SplitResult, urljoin, urlsplit

from comfyfleet.models._errors import DownloadError, SourceAuthError, SourceNotFound
from comfyfleet.models._sources import ResolvedSource

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRYABLE = (408, 425, 429, 500, 502, 503, 504)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
USER_AGENT = "comfyfleet-models/1"

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # resets, refused, timeouts (socket.timeout is an OSError)
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine
)


_Origin = tuple[str, str, int]
"""(scheme, host, port): one kept-alive connection each."""


def _origin(parts: SplitResult) -> _Origin:
    scheme = parts.scheme
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class Opened:
    """An answered GET whose body is still to be read."""

    url: str
    response: http.client.HTTPResponse

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Message:
        return self.response.headers

    @property
    def length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value and value.isdigit() else None

    @property
    def content_range(self) -> tuple[int, int, int | None] | None:
        """(first, last + 1, total) of a 206."""
        match = _CONTENT_RANGE.match(self.headers.get("Content-Range", "").strip())
        if match is None:
            return None
        total = None if match.group(3) == "*" else int(match.group(3))
        return int(match.group(1)), int(match.group(2)) + 1, total

    @property
    def total(self) -> int | None:
        """The whole file's size, as far as this answer tells."""
        if self.status == 206:
            found = self.content_range
            return found[2] if found else None
        return self.length

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("Last-Modified")


class HttpSession:
    """One thread's connections (one per origin, kept alive while bodies are read whole)."""

    def __init__(self, source: ResolvedSource, connect_timeout: float, read_timeout: float):
        self.source = source
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._conns: dict[_Origin, http.client.HTTPConnection] = {}
        self.resolved_url: str | None = None
        """Where the source's URL redirected to last time (signed URLs are reused)."""

    def get(self, headers: Mapping[str, str], *, max_redirects: int = 10) -> Opened:
        """GET the source (or where it redirected to), following redirects; errors mapped."""
        if self.resolved_url is not None:
            try:
                return self._get(self.resolved_url, dict(headers), max_redirects, False)
            except (SourceAuthError, SourceNotFound):
                self.resolved_url = None  # an expired signed URL: ask the source again
        return self._get(self.source.url, {**self.source.headers, **headers}, max_redirects, True)

    def _get(self, url: str, headers: dict[str, str], redirects: int, first: bool) -> Opened:
        for _ in range(redirects + 1):
            response = self._request(url, headers)
            if response.status not in _REDIRECTS:
                if not first or url != self.source.url:
                    self.resolved_url = url
                opened = Opened(url, response)
                self._check(opened)
                return opened
            location = response.headers.get("Location")
            response.read()
            if not location:
                raise DownloadError(
                    f"{self.source.source}: redirect {response.status} without a Location",
                    url=url,
                )
            target = urljoin(url, location)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        raise DownloadError(f"{self.source.source}: more than {redirects} redirects", url=url)

    def _request(self, url: str, headers: Mapping[str, str]) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        origin = _origin(parts)
        conn = self._conns.get(origin)
        if conn is None:
            guard = self.source.guard
            if guard is not None:  # every hop of a client's URL: to checked addresses only
                conn = guard.connection(*origin, self.connect_timeout)
            else:
                conn = _connect(*origin, self.connect_timeout)
            self._conns[origin] = conn
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if getattr(conn, "_comfyfleet_forward_proxy", False):
            target = url
        all_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        try:
            conn.request("GET", target, headers=all_headers)
            response = conn.getresponse()
        except BaseException:
            self._drop(origin)
            raise
        if conn.sock is not None:  # body reads may wait longer than the connect did
            conn.sock.settimeout(self.read_timeout)
        return response

    def _drop(self, origin: _Origin) -> None:
        conn = self._conns.pop(origin, None)
        if conn is not None:
            conn.close()

    def _check(self, opened: Opened) -> None:
        status = opened.status
        if status in (200, 206):
            return
        body = _short_body(opened.response)
        self.close()
        source = self.source
        where = f"{source.source}: HTTP {status}"
        if status in (401, 403):
            hint = _auth_hint(source, status)
            raise SourceAuthError(f"{where} ({body})", hint=hint, url=source.url)
        if status in (404, 410):
            raise SourceNotFound(
                f"{where}: the server has no such file ({body})",
                hint="check the source's spelling, repository path and revision",
                url=source.url,
            )
        if status == 416:
            raise DownloadError(f"{where}: range not satisfiable", retryable=True, url=source.url)
        raise DownloadError(f"{where} ({body})", retryable=status in _RETRYABLE, url=source.url)

    def abort(self) -> None:
        """Unblock a read in progress from another thread (cancel)."""
        for conn in list(self._conns.values()):
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def discard(self, opened: Opened) -> None:
        """Forget the connection of a response that will not be read to its end."""
        opened.response.close()
        self._drop(_origin(urlsplit(opened.url)))

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def _auth_hint(source: ResolvedSource, status: int) -> str:
    if source.token_env is None:
        return "the server wants credentials this source cannot give; use an hf:// or civitai://"
    if not source.token_set:
        return f"set {source.token_env} to a token that may read this file"
    if status == 403:
        return (
            f"the token in {source.token_env} may not read this file (gated models need their"
            " license accepted on the model page)"
        )
    return f"the token in {source.token_env} was refused: check that it is valid"


def _short_body(response: http.client.HTTPResponse) -> str:
    try:
        text = response.read(300).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        text = ""
    return " ".join(text.split())[:200] or response.reason


def _connect(scheme: str, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    proxy = None if host in _LOOPBACK else _proxy_for(scheme, host)
    conn: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context()
        if proxy is not None:
            conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout, context=context)
            conn.set_tunnel(host, port)
            return conn
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    if scheme != "http":
        raise DownloadError(f"cannot fetch {scheme}:// over HTTP")
    if proxy is not None:
        conn = http.client.HTTPConnection(proxy[0], proxy[1], timeout=timeout)
        conn._comfyfleet_forward_proxy = True  # type: ignore[attr-defined]
        return conn
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
    """The proxy from the usual environment variables, unless `no_proxy` exempts the host."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 80
