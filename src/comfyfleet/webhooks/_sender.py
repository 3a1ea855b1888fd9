"""One delivery attempt: check the target, sign, POST, and record what happened.

2xx is delivered. Anything else (refused connection, timeout, any other status) is retried after
an exponential delay with full jitter (uniform between 0 and `initial * 2**(n-1)`, capped at
`max_backoff_s`), until `retry_for_s` has passed since the first attempt: the last try lands on
that deadline, and if it fails too the delivery is dead-lettered (`failed`) and the job's next
delivery goes ahead. Two answers dead-letter at once: 410 Gone (the receiver says this endpoint
is gone for good, per Standard Webhooks) and a target the network policy refuses (it will not
become allowed by waiting). Redirects are not followed: a 3xx is a failed attempt like a 5xx.

A webhook URL comes from whoever submits a job, so every attempt goes through
:class:`comfyfleet.netguard.GuardedClient`: the host is resolved once, every address checked
against the policy (no loopback, private, link-local or metadata addresses unless
`allow_private_targets`), and the request sent to the checked address itself, so a DNS answer
that changes between the check and the connection (rebinding) cannot lead inside.

Recorded errors say what failed and never carry the secret or the signature.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

import httpx

from comfyfleet import __version__
from comfyfleet.netguard import GuardedClient, UrlRefused, UrlUnreachable
from comfyfleet.webhooks._errors import WebhookConfigError
from comfyfleet.webhooks._model import Delivery, DeliveryState, check_url_shape
from comfyfleet.webhooks._outbox import Outbox
from comfyfleet.webhooks._settings import WebhookSettings
from comfyfleet.webhooks._signing import signed_headers

GONE = 410
_SNIPPET_BYTES = 200
_ERROR_CHARS = 500


def backoff_delay(
    attempt: int,
    *,
    initial_s: float,
    max_s: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 = the first): full jitter."""
    ceiling = min(max_s, initial_s * 2.0 ** min(max(attempt - 1, 0), 60))
    return ceiling * rand()


@dataclass(frozen=True)
class Outcome:
    """What one attempt ended as (the row is updated to match)."""

    state: DeliveryState
    status: int | None
    error: str | None
    next_at: float | None = None


AttemptWatch = Callable[[Outcome, float], None]
"""Told of every attempt: its outcome and how long the receiver took (metrics)."""


class Sender:
    """Attempts deliveries through `http` (its resolver and transport are the seams tests
    swap)."""

    def __init__(
        self,
        outbox: Outbox,
        http: GuardedClient,
        *,
        secret: str,
        settings: WebhookSettings,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        watch: AttemptWatch | None = None,
    ) -> None:
        self.watch = watch
        self.outbox = outbox
        self.http = http
        self._secret = secret
        self.settings = settings
        self.clock = clock
        self.rand = rand

    async def attempt(self, delivery: Delivery) -> Outcome:
        """Try `delivery` once and record the outcome in the outbox."""
        began = time.monotonic()
        outcome = await self._attempt(delivery)
        if self.watch is not None:
            self.watch(outcome, time.monotonic() - began)
        return outcome

    async def _attempt(self, delivery: Delivery) -> Outcome:
        started = self.clock()
        status, error, final = await self._post(delivery, started)
        if _delivered(status):
            await self.outbox.mark_delivered(delivery.id, status=status, now=started)
            return Outcome(DeliveryState.DELIVERED, status, None)
        first = started if delivery.first_attempt_at is None else delivery.first_attempt_at
        deadline = first + self.settings.retry_for_s
        finished = self.clock()
        if final or finished >= deadline:
            await self.outbox.mark_failed(delivery.id, status=status, error=error, now=started)
            return Outcome(DeliveryState.FAILED, status, error)
        delay = backoff_delay(
            delivery.attempts + 1,
            initial_s=self.settings.initial_backoff_s,
            max_s=self.settings.max_backoff_s,
            rand=self.rand,
        )
        next_at = min(finished + delay, deadline)
        await self.outbox.mark_retry(
            delivery.id, next_at=next_at, status=status, error=error, now=started
        )
        return Outcome(DeliveryState.PENDING, status, error, next_at)

    async def send_due(self, *, limit: int = 1000) -> list[Outcome]:
        """One round, for tests and batch runs: attempt every delivery due now once (one per
        job, `concurrency` at a time) and return. Deliveries that become due meanwhile wait for
        the next round."""
        due = await self.outbox.due(self.clock(), limit)
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(delivery: Delivery) -> Outcome:
            async with gate:
                return await self.attempt(delivery)

        return list(await asyncio.gather(*(one(d) for d in due)))

    async def _post(self, delivery: Delivery, started: float) -> tuple[int | None, str, bool]:
        """(status or None, error text, whether the failure is final). Only the error text of a
        2xx is unused."""
        body = delivery.body.encode("utf-8")
        headers = signed_headers(self._secret, delivery.id, body, timestamp=int(started))
        headers |= {"content-type": "application/json", "user-agent": f"comfyfleet/{__version__}"}
        try:
            check_url_shape(delivery.url)
            async with (
                asyncio.timeout(self.settings.timeout_s),
                self.http.stream("POST", delivery.url, content=body, headers=headers) as answer,
            ):
                status = answer.response.status_code
                snippet = "" if _delivered(status) else await _snippet(answer.response)
        except (WebhookConfigError, UrlRefused) as exc:
            return None, _clip(f"target refused: {exc.message}"), True
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_s:g} s", False
        except UrlUnreachable as exc:
            return None, _clip(exc.message), False
        except (httpx.HTTPError, OSError) as exc:
            return None, _clip(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)), False
        if _delivered(status):
            return status, "", False
        error = f"the receiver answered {status}" + (f": {snippet}" if snippet else "")
        return status, _clip(error), status == GONE


def _delivered(status: int | None) -> TypeGuard[int]:
    """Whether the receiver's answer accepts the message (any 2xx)."""
    return status is not None and 200 <= status < 300


async def _snippet(response: httpx.Response) -> str:
    """The start of an error answer's body, to show why the receiver refused."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= _SNIPPET_BYTES:
            break
    return " ".join(data[:_SNIPPET_BYTES].decode("utf-8", "replace").split())


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."
