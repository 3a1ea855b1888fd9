"""Runs the relay and the sender as two asyncio tasks, from `start()` to `stop()`.

The relay task wakes on `notify()` (the job store has new events in this process) or every
`poll_s` (events another process wrote to a shared store); after storing deliveries it wakes the
sender. The sender task starts each job's due head delivery as its own task, `concurrency` at a
time and never two of one job at once, then sleeps until the next delivery falls due (capped at
`poll_s`), a task finishes, or it is woken.

`stop()` is prompt: no waiting for backoff sleeps. Attempts already on the wire get
`stop_grace_s` to finish and be recorded; one cut short stays pending and is sent again after the
restart, with the same `webhook-id`, which is how Standard Webhooks receivers recognise a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import httpx

from comfyfleet.logs import log_context
from comfyfleet.netguard import GuardedClient, NetPolicy, Resolver, system_resolve
from comfyfleet.webhooks._model import Delivery
from comfyfleet.webhooks._outbox import Outbox
from comfyfleet.webhooks._relay import EventSource, JobView, Relay, default_view
from comfyfleet.webhooks._sender import AttemptWatch, Sender
from comfyfleet.webhooks._settings import WebhookSettings

log = logging.getLogger("comfyfleet.webhooks")


class WebhookService:
    """Relay + sender for one outbox. Needs `settings.secret` (WebhookConfigError otherwise)."""

    def __init__(
        self,
        source: EventSource,
        outbox: Outbox,
        settings: WebhookSettings,
        *,
        view: JobView = default_view,
        resolve: Resolver = system_resolve,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        watch: AttemptWatch | None = None,
    ) -> None:
        self.watch = watch
        """Told of every delivery attempt (metrics); set before `start`."""
        self.settings = settings
        self.outbox = outbox
        self._secret = settings.signing_secret()
        self._resolve = resolve
        self._transport = transport
        self._clock = clock
        self._rand = rand
        self.relay = Relay(
            source,
            outbox,
            view=view,
            default_events=settings.default_events,
            batch=settings.relay_batch,
        )
        self._sender: Sender | None = None
        self._relay_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._cooling: dict[str, float] = {}  # job id -> when an unexpected error cools off
        self._ended: dict[str, float] = {}
        """Delivery id -> when its attempt ended (monotonic), kept while a read of the due
        deliveries that began before then may still answer."""

    # --- life ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._loops:
            return
        # No redirects, no proxy from the environment, and the request goes to the address that
        # was checked: nothing can lead past the policy.
        http = GuardedClient(
            NetPolicy(allow_private=self.settings.allow_private_targets),
            timeout_s=self.settings.timeout_s,
            max_redirects=0,
            resolve=self._resolve,
            transport=self._transport,
        )
        self._sender = Sender(
            self.outbox,
            http,
            secret=self._secret,
            settings=self.settings,
            clock=self._clock,
            rand=self._rand,
            watch=self.watch,
        )
        self._loops = [self._spawn(self._relay_loop()), self._spawn(self._send_loop())]

    def notify(self) -> None:
        """New job events exist: relay them now rather than at the next poll."""
        self._relay_wake.set()

    def wake_sender(self) -> None:
        """A delivery became due outside the schedule (a redeliver): look now."""
        self._send_wake.set()

    async def stop(self) -> None:
        loops, self._loops = self._loops, []
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        attempts = list(self._in_flight.values())
        if attempts:
            _, late = await asyncio.wait(attempts, timeout=self.settings.stop_grace_s)
            for task in late:
                task.cancel()
            for task in attempts:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._in_flight.clear()

    async def __aenter__(self) -> WebhookService:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- loops -----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro)

    async def _relay_loop(self) -> None:
        while True:
            self._relay_wake.clear()
            try:
                if await self.relay.drain(now=self._clock()):
                    self._send_wake.set()
            except Exception:  # a store hiccup must not end webhook delivery
                log.exception("relaying job events to the webhook outbox failed")
            await _wait(self._relay_wake, self.settings.poll_s)

    async def _send_loop(self) -> None:
        while True:
            self._send_wake.clear()
            try:
                await self._start_due()
                delay = await self._idle_delay()
            except Exception:
                log.exception("reading due webhook deliveries failed")
                delay = self.settings.poll_s
            await _wait(self._send_wake, delay)

    async def _start_due(self) -> None:
        now = self._clock()
        self._cooling = {job: until for job, until in self._cooling.items() if until > now}
        free = self.settings.concurrency - len(self._in_flight)
        if free <= 0:
            return
        busy = len(self._in_flight) + len(self._cooling)
        asked = time.monotonic()
        due = await self.outbox.due(now, free + busy)
        # The read shows the outbox as it was when it began (a store's snapshot): an attempt
        # that ended meanwhile may still read as pending, and must not start again.
        stale = {d for d, ended in self._ended.items() if ended >= asked}
        self._ended = {d: self._ended[d] for d in stale}
        for delivery in due:
            if free <= 0:
                break
            if delivery.job_id in self._in_flight or delivery.job_id in self._cooling:
                continue
            if delivery.id in stale:
                continue
            self._in_flight[delivery.job_id] = self._spawn(self._attempt(delivery))
            free -= 1

    async def _idle_delay(self) -> float:
        """Seconds until the next delivery falls due. One due already but not started (its
        job is in flight, or all slots are busy) waits for a finishing attempt to wake us."""
        now = self._clock()
        due_at = await self.outbox.next_due_at(after=now)
        if due_at is None:
            return self.settings.poll_s
        return min(due_at - now, self.settings.poll_s)

    async def _attempt(self, delivery: Delivery) -> None:
        assert self._sender is not None
        try:
            with log_context(job_id=delivery.job_id):
                try:
                    await self._sender.attempt(delivery)
                except Exception:
                    log.exception("webhook delivery %s failed unexpectedly", delivery.id)
                    self._cooling[delivery.job_id] = self._clock() + self.settings.poll_s
        finally:
            self._ended[delivery.id] = time.monotonic()
            self._in_flight.pop(delivery.job_id, None)
            if self._loops:  # not stopping
                self._send_wake.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
