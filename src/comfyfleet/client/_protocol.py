"""The client's logic without I/O: plans that yield operations and get their results back.

Everything the client does (submit with retries, follow a job's events and resume them after a
dropped connection, wait, download the outputs) is written once, as a generator that yields
operations (:class:`Request`, :class:`ReadLine`, :class:`Sleep`, :class:`Emit`) and receives
what each produced. `Client` and `AsyncClient` each run plans with a small driver over their own
httpx client, blocking or awaiting; neither holds any logic of its own, so the two surfaces
cannot drift apart.

A driver sends back a :class:`Reply` for a request, the next line (or None at the end) for a
`ReadLine`, None for a `Sleep`, and nothing for an `Emit` (it hands the value to the caller:
an event for `events()` and `on_progress`). When the network fails it throws a
:class:`TransportFailure` into the plan, which decides whether to retry.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One HTTP request. `url` is a path on the server, or an absolute URL (an output file in
    S3 or Azure, whose presigned URL needs no key and must not get one)."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    stream: bool = False
    """Answer with the status and headers only, then lines through `ReadLine`."""
    timeout: float | None = None
    """Seconds to wait for each read; None: the client's default."""
    send_key: bool = True
    """Whether the API key goes with it (never to another host)."""
    idempotent: bool = False
    """Whether sending it twice is harmless, so a failure after it was sent may be retried."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: the whole body, or none yet for a stream that opened (2xx)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class ReadLine:
    """The next line of the stream the last request opened; None when it ended."""


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """A value for the caller (an event), handed over while the plan goes on."""

    value: Any


Op = Request | ReadLine | Sleep | Emit
Plan = Generator[Op, Any, T]
"""A plan that ends with a `T` (`return` value)."""

READ_LINE = ReadLine()


class TransportFailure(Exception):
    """What a driver throws into a plan when the network failed: `sent` False when the request
    cannot have reached the server (connecting failed), `timeout` when a read took too long."""

    def __init__(self, message: str, *, sent: bool, timeout: bool) -> None:
        super().__init__(message)
        self.message = message
        self.sent = sent
        self.timeout = timeout
