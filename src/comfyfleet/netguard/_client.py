"""An HTTP client that reaches only what the policy allows, checked at every redirect hop.

How DNS rebinding is defeated: the host is resolved once (`checked_addresses`), every address is
checked, and the request is sent to the checked IP literal itself, with the original `Host` header
and, for https, `extensions={"sni_hostname": host}`. httpcore uses that name both for SNI and for
certificate verification, so TLS still proves the server is the named host. This keeps to httpx's
public API; the alternative, a custom network backend that resolves inside httpcore, would tie us
to httpcore internals. Connections are never kept alive (`max_keepalive_connections=0`), so a
connection opened for one name is never reused for another name on the same IP, and environment
proxies are ignored (`trust_env=False`): a proxy would resolve the name again itself.

Redirects are followed by hand (GET and HEAD only, at most `max_redirects` hops), each new URL
going through the same scheme and address checks as the first.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from comfyfleet.netguard._errors import TooManyRedirects, UrlRefused, UrlUnreachable
from comfyfleet.netguard._policy import NetPolicy
from comfyfleet.netguard._resolve import Resolver, checked_addresses, ip_literal, system_resolve

_SCHEMES = ("http", "https")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def short_url(url: str | httpx.URL, limit: int = 160) -> str:
    """A URL for messages: without user info, cut to `limit` characters."""
    text = str(url)
    try:
        parsed = httpx.URL(text)
        if parsed.userinfo:
            text = str(parsed.copy_with(username=None, password=None))
    except httpx.InvalidURL:
        pass
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """`url` parsed, or :class:`UrlRefused` when it is not an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UrlRefused(f"{short_url(str(url))!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in _SCHEMES:
        what = f"{parsed.scheme}:// URLs" if parsed.scheme else "URLs without a scheme"
        raise UrlRefused(f"{what} are not fetched", hint="give an http:// or https:// URL")
    if not parsed.host:
        raise UrlRefused(f"{short_url(parsed)} has no host")
    return parsed


def _error_text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class GuardedResponse:
    """The final answer of a guarded request: the URL as written (after redirects), the address
    actually connected to, and the httpx response (streamed: read it inside the `with`)."""

    url: str
    address: str
    response: httpx.Response


class GuardedClient:
    """Sends requests only to addresses that `policy` allows (see the module docstring).

    `resolve` replaces the system resolver (tests map names to local servers with it); `verify`
    is passed to httpx (an `ssl.SSLContext` with a private CA, or False), and so is `transport`
    (tests answer in-process with `httpx.MockTransport`; the request still goes to the checked
    address, with the name in `Host`).
    """

    def __init__(
        self,
        policy: NetPolicy | None = None,
        *,
        timeout_s: float = 30.0,
        max_redirects: int = 3,
        resolve: Resolver = system_resolve,
        verify: ssl.SSLContext | bool = True,
        user_agent: str = "comfyfleet",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy or NetPolicy()
        self._transport = transport
        self.max_redirects = max_redirects
        self._timeout = httpx.Timeout(timeout_s)
        self._resolve = resolve
        self._verify = verify
        self._default_tls: ssl.SSLContext | None = None
        self._user_agent = user_agent

    def _tls(self) -> ssl.SSLContext | bool:
        """The TLS setting for httpx; the default context is built once, on first use."""
        if self._verify is not True:
            return self._verify
        if self._default_tls is None:
            self._default_tls = httpx.create_ssl_context()
        return self._default_tls

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> AsyncIterator[GuardedResponse]:
        """Send the request and yield the final response, open for streaming.

        Raises :class:`UrlRefused` (scheme, address, a redirect to either),
        :class:`TooManyRedirects`, or :class:`UrlUnreachable` (DNS, connect, TLS, timeout).
        """
        first = parse_url(url)
        async with httpx.AsyncClient(
            transport=self._transport,
            verify=self._tls(),
            timeout=self._timeout,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": self._user_agent},
        ) as client:
            result = await self._follow(client, method.upper(), first, headers or {}, content)
            try:
                yield result
            finally:
                await result.response.aclose()

    async def _follow(
        self,
        client: httpx.AsyncClient,
        method: str,
        first: httpx.URL,
        headers: Mapping[str, str],
        content: bytes | None,
    ) -> GuardedResponse:
        current = first
        hop = 0
        while True:
            address, response = await self._send(client, method, current, headers, content, hop)
            location = response.headers.get("location")
            if not (response.status_code in _REDIRECTS and location and method in ("GET", "HEAD")):
                return GuardedResponse(str(current), address, response)
            await response.aclose()
            if hop >= self.max_redirects:
                raise TooManyRedirects(
                    f"{short_url(first)} redirects more than {self.max_redirects} times",
                    hint="give the final URL of the file",
                )
            hop += 1
            try:
                target = current.join(location)
            except httpx.InvalidURL as exc:
                raise UrlUnreachable(f"{short_url(current)} redirects to a bad URL: {exc}") from exc
            try:
                current = parse_url(target)
            except UrlRefused as exc:
                raise UrlRefused(f"redirected to {short_url(target)}: {exc.message}") from exc

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: bytes | None,
        hop: int,
    ) -> tuple[str, httpx.Response]:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await checked_addresses(host, port, self.policy, self._resolve)
        except UrlRefused as exc:
            if hop == 0:
                raise
            raise UrlRefused(
                f"redirected to {short_url(url)}: {exc.message}",
                hint=exc.hint,
                address=exc.address,
                address_class=exc.address_class,
            ) from exc
        request_headers = httpx.Headers(headers)
        request_headers["Host"] = url.netloc.decode("ascii")
        extensions = {}
        if url.scheme == "https" and ip_literal(host) is None:
            extensions["sni_hostname"] = host
        failures: list[str] = []
        for address in addresses:
            request = client.build_request(
                method,
                url.copy_with(host=str(address)),
                headers=request_headers,
                content=content,
                extensions=extensions,
            )
            try:
                return str(address), await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failures.append(f"{address}: {_error_text(exc)}")
            except httpx.TimeoutException as exc:
                raise UrlUnreachable(f"{host}:{port} did not answer in time") from exc
            except httpx.HTTPError as exc:
                raise UrlUnreachable(f"{host}:{port}: {_error_text(exc)}") from exc
        raise UrlUnreachable(
            f"cannot connect to {host}:{port} ({'; '.join(failures)})",
            hint="check that the URL is reachable from the server",
        )
