"""Sending a request with retries, as a plan: which failures are worth another try, and when.

A request is tried again when trying cannot do harm and may help:

- the connection could not be made (nothing reached the server): always;
- the connection broke or timed out after the request went out, or the server answered 429,
  502, 503 or 504: only for requests that are harmless to repeat (reads, deletes, cancels,
  content-addressed uploads, and submits, which always carry an `Idempotency-Key` so that a
  repeated submit answers with the job the first one made instead of running it twice).

Waits grow exponentially with full jitter, and a `Retry-After` the server sent is honoured
(up to `max_delay_s`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from comfyfleet.client._errors import ApiError, ConnectionError, Timeout, api_error
from comfyfleet.client._protocol import Plan, Reply, Request, Sleep, TransportFailure

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Retries:
    """How hard the client tries: `attempts` in all (1: no retry), the first wait
    `initial_delay_s`, doubling up to `max_delay_s` (each wait drawn at random below it)."""

    attempts: int = 4
    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retries.attempts must be at least 1, not {self.attempts}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("Retries delays must not be negative")

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """How long to wait after failed attempt number `attempt` (from 1)."""
        asked = _seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_delay_s)
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


NO_RETRIES = Retries(attempts=1)


def send(request: Request, retries: Retries) -> Plan[Reply]:
    """Send `request`, retrying what may be retried; the last answer, whatever its status.
    Raises :class:`ConnectionError` or :class:`Timeout` when the network fails for good."""
    attempt = 0
    while True:
        attempt += 1
        last = attempt >= retries.attempts
        try:
            reply: Reply = yield request
        except TransportFailure as exc:
            if last or (exc.sent and not request.idempotent):
                raise _public(exc, request) from exc
            yield Sleep(retries.delay(attempt))
            continue
        if reply.status in RETRY_STATUSES and request.idempotent and not last:
            yield Sleep(retries.delay(attempt, reply.headers.get("retry-after")))
            continue
        return reply


def call(request: Request, retries: Retries, ok: tuple[int, ...] = (200,)) -> Plan[Reply]:
    """`send`, then :class:`ApiError` unless the status is one of `ok`."""
    reply = yield from send(request, retries)
    if reply.status not in ok:
        raise expected_error(reply)
    return reply


def expected_error(reply: Reply) -> ApiError:
    if reply.status < 400:
        return ApiError(
            reply.status, "unexpected_status", f"the server answered {reply.status} unexpectedly"
        )
    return api_error(reply.status, reply.body)


def _public(exc: TransportFailure, request: Request) -> Timeout | ConnectionError:
    what = f"{request.method} {request.url}"
    if exc.timeout:
        return Timeout(f"{what}: no answer in time ({exc.message})")
    return ConnectionError(f"{what}: {exc.message}")


def _seconds(header: str | None) -> float | None:
    """A `Retry-After` given in seconds (the only form the server sends)."""
    if header is None:
        return None
    try:
        value = float(header.strip())
    except ValueError:
        return None
    return value if value >= 0 else None
