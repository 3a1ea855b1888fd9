"""What both drivers share: stepping a plan, and turning its requests into httpx's and httpx's
answers and failures into the plan's terms. The drivers (`_sync`, `_async`) add only the
blocking or awaiting calls themselves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from comfyfleet.client._protocol import Op, Plan, Reply, Request, TransportFailure
from comfyfleet.client._retry import Retries

T = TypeVar("T")

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Failures that happen before a request leaves: any request may be sent again."""


class Steps(Generic[T]):
    """Iterates over a plan's operations; the driver answers each (`reply` or `fail`) before
    asking for the next. `value` is what the plan returned, once iteration has ended."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self._answer: Any = None
        self._failure: TransportFailure | None = None
        self._done = False
        self._value: Any = None

    def __iter__(self) -> Steps[T]:
        return self

    def __next__(self) -> Op:
        answer, failure = self._answer, self._failure
        self._answer, self._failure = None, None
        try:
            if failure is not None:
                return self._plan.throw(failure)
            return self._plan.send(answer)
        except StopIteration as stop:
            self._done, self._value = True, stop.value
            raise StopIteration from None

    def reply(self, answer: Any) -> None:
        self._answer = answer

    def fail(self, exc: httpx.HTTPError) -> None:
        self._failure = transport_failure(exc)

    @property
    def value(self) -> T:
        if not self._done:
            raise RuntimeError("the plan has not finished")
        result: T = self._value
        return result

    def close(self) -> None:
        self._plan.close()


class RunBase(Generic[T]):
    """One run of a plan by a driver: the plan's steps, and the stream its last request
    opened, if any (each run has its own, so runs can interleave on one client)."""

    def __init__(self, auth: Auth, plan: Plan[T]) -> None:
        self.auth = auth
        self.steps = Steps(plan)
        self.stream: httpx.Response | None = None


class Auth:
    """The server's base URL and the key that goes with requests to it, and only to it."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the server URL must be http(s)://host[:port], not {base_url!r}")
        self._origin = (parts.scheme, parts.netloc.lower())

    def headers(self, request: Request) -> dict[str, str]:
        headers = dict(request.headers)
        if self.api_key and self.same_origin(request.url):
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            return True  # a path on the server
        return (parts.scheme, parts.netloc.lower()) == self._origin


def build_request(
    http: httpx.Client | httpx.AsyncClient, auth: Auth, request: Request
) -> httpx.Request:
    body: dict[str, Any] = {}
    if request.json is not None:
        body["json"] = request.json
    elif request.content is not None:
        body["content"] = request.content
    timeout = httpx.USE_CLIENT_DEFAULT if request.timeout is None else request.timeout
    return http.build_request(
        request.method,
        request.url,
        params=dict(request.params),
        headers=auth.headers(request),
        timeout=timeout,
        **body,
    )


def keeps_stream(request: Request, status: int) -> bool:
    """Whether an answer stays open for `ReadLine` (a 2xx with a body to a stream request)."""
    return request.stream and 200 <= status < 300 and status != 204


def reply_of(response: httpx.Response, body: bytes = b"") -> Reply:
    headers: Mapping[str, str] = response.headers
    return Reply(response.status_code, headers, body)


def transport_failure(exc: httpx.HTTPError) -> TransportFailure:
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TransportFailure(
        message,
        sent=not isinstance(exc, _NOT_SENT),
        timeout=isinstance(exc, httpx.TimeoutException),
    )


H = TypeVar("H", httpx.Client, httpx.AsyncClient)
AnyTransport = httpx.BaseTransport | httpx.AsyncBaseTransport


class ClientBase(Generic[H]):
    """What both clients hold: the server's URL, the key for it, the retry policy and an
    httpx client of their kind (made by `_open`)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: Retries | None = None,
        transport: AnyTransport | None = None,
    ) -> None:
        self._auth = Auth(url, api_key)
        self.url = self._auth.base_url
        """The server's base URL."""
        self.retries = retries or Retries()
        self._http: H = self._open(timeout, transport)

    def _open(self, timeout: float, transport: AnyTransport | None) -> H:
        raise NotImplementedError

    def _http_args(self, timeout: float) -> dict[str, Any]:
        return {"base_url": self.url, "timeout": timeout, "follow_redirects": False}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
