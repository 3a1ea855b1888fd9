"""The sender, against an in-process receiver (httpx's mock transport), a hand-written resolver
and a hand-moved clock: signed requests, per-job order, backoff inside its bounds, dead letters,
410, redeliver, errors that say what happened without the secret, and requests that go to the
address that was checked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from comfyfleet.netguard import GuardedClient, NetPolicy
from comfyfleet.webhooks import (
    DeliveryState,
    MemoryOutbox,
    NewDelivery,
    Sender,
    WebhookSettings,
    backoff_delay,
    generate_secret,
    verify,
)

T = TypeVar("T")
SECRET = generate_secret()
START = 1_700_000_000.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


class Receiver:
    """Answers with `status(request)` (200 by default) and keeps what it got, verified."""

    def __init__(self, clock: Clock, status: Callable[[httpx.Request], int] = lambda r: 200):
        self.clock = clock
        self.status = status
        self.got: list[tuple[str, str, int]] = []  # (webhook-id, job id, status answered)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        verify(SECRET, dict(request.headers), body, now=self.clock())
        assert request.headers["content-type"] == "application/json"
        status = self.status(request)
        job = request.url.path.rsplit("/", 1)[-1]
        self.got.append((request.headers["webhook-id"], job, status))
        return httpx.Response(status, text="receiver says no" if status >= 300 else "")


def settings(**changes: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "secret": SECRET,
        "initial_backoff_s": 1.0,
        "max_backoff_s": 8.0,
        "retry_for_s": 60.0,
        "timeout_s": 5.0,
        "allow_private_targets": True,
    }
    return WebhookSettings.model_validate(values | changes)


class Dns:
    """Answers every name with the next address of `answers` (the last one repeats)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers or ["127.0.0.1"])
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]


def make_sender(
    outbox: MemoryOutbox,
    handler: Callable[[httpx.Request], Any],
    clock: Clock,
    config: WebhookSettings,
    rand: Callable[[], float] = lambda: 1.0,
    dns: Dns | None = None,
) -> Sender:
    http = GuardedClient(
        NetPolicy(allow_private=config.allow_private_targets),
        timeout_s=config.timeout_s,
        max_redirects=0,
        resolve=dns or Dns(),
        transport=httpx.MockTransport(handler),
    )
    return Sender(outbox, http, secret=SECRET, settings=config, clock=clock, rand=rand)


async def fill(outbox: MemoryOutbox, plan: list[str], url: str = "http://hooks.test") -> None:
    """One delivery per entry of `plan` (a job id), in that order."""
    rows = [
        NewDelivery(f"msg_{i}", i, job, "job.progress", f"{url}/{job}", f'{{"n":{i}}}')
        for i, job in enumerate(plan, start=1)
    ]
    await outbox.relay(0, len(plan), rows, now=START)


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    ceilings = [backoff_delay(n, initial_s=5, max_s=60, rand=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [5, 10, 20, 40, 60, 60]
    assert backoff_delay(3, initial_s=5, max_s=60, rand=lambda: 0.0) == 0
    assert backoff_delay(10_000, initial_s=5, max_s=3600, rand=lambda: 1.0) == 3600
    for n in range(1, 12):
        delay = backoff_delay(n, initial_s=0.5, max_s=30)
        assert 0 <= delay <= min(30, 0.5 * 2 ** (n - 1))


def test_a_2xx_answer_delivers_a_signed_request() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    receiver = Receiver(clock, lambda r: 204)

    async def scenario() -> None:
        await fill(outbox, ["a"])
        sender = make_sender(outbox, receiver, clock, settings())
        [outcome] = await sender.send_due()
        assert outcome.state is DeliveryState.DELIVERED
        row = await outbox.get("msg_1")
        assert (row.state, row.attempts, row.last_status, row.delivered_at) == (
            "delivered",
            1,
            204,
            START,
        )

    run(scenario())
    assert receiver.got == [("msg_1", "a", 204)]


def test_each_job_gets_its_deliveries_in_order_while_jobs_go_in_parallel() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    flaky = {"msg_1": 2, "msg_5": 1}  # these fail this many times first

    def status(request: httpx.Request) -> int:
        left = flaky.get(request.headers["webhook-id"], 0)
        flaky[request.headers["webhook-id"]] = left - 1
        return 503 if left > 0 else 200

    receiver = Receiver(clock, status)

    async def scenario() -> None:
        await fill(outbox, ["a", "b", "a", "b", "a", "c", "a"])
        sender = make_sender(outbox, receiver, clock, settings())
        rounds = 0
        while (await outbox.due(clock.t + 100, 10)) and rounds < 50:
            await sender.send_due()
            clock.t += 10  # past any backoff (ceiling 8 s)
            rounds += 1

    run(scenario())
    delivered = [(msg, job) for msg, job, code in receiver.got if code == 200]
    for job in "abc":
        order = [int(msg.removeprefix("msg_")) for msg, j in delivered if j == job]
        assert order == sorted(order)
    assert sorted(msg for msg, _ in delivered) == sorted(f"msg_{i}" for i in range(1, 8))
    # Job a was held up by msg_1 while b and c went ahead: no head-of-line blocking across jobs.
    first_a = next(i for i, (msg, _) in enumerate(delivered) if msg == "msg_1")
    assert {"msg_2", "msg_6"} <= {msg for msg, _ in delivered[:first_a]}
    assert [code for msg, _, code in receiver.got if msg == "msg_1"] == [503, 503, 200]


def test_a_failed_attempt_is_retried_within_the_backoff_bounds() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    receiver = Receiver(clock, lambda r: 500)

    async def scenario() -> None:
        await fill(outbox, ["a"])
        sender = make_sender(outbox, receiver, clock, settings(), rand=lambda: 0.75)
        expected_ceiling = [1.0, 2.0, 4.0, 8.0, 8.0]
        for ceiling in expected_ceiling:
            [outcome] = await sender.send_due()
            assert outcome.state is DeliveryState.PENDING
            assert outcome.next_at == pytest.approx(clock.t + 0.75 * ceiling)
            assert await sender.send_due() == []  # not due before its time
            clock.t = outcome.next_at
        row = await outbox.get("msg_1")
        assert (row.attempts, row.last_status, row.first_attempt_at) == (5, 500, START)
        assert row.last_error == "the receiver answered 500: receiver says no"
        assert SECRET not in row.last_error

    run(scenario())


def test_after_the_retry_window_a_delivery_is_dead_lettered_and_the_next_one_goes() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    receiver = Receiver(clock, lambda r: 502 if r.headers["webhook-id"] == "msg_1" else 200)

    async def scenario() -> None:
        await fill(outbox, ["a", "a"])
        sender = make_sender(outbox, receiver, clock, settings(retry_for_s=20.0))
        outcomes = []
        while (await outbox.get("msg_1")).state == "pending":
            outcomes += await sender.send_due()
            clock.t = (await outbox.next_due_at()) or clock.t
        row = await outbox.get("msg_1")
        assert row.state == "failed"
        assert row.failed_at == START + 20  # the last try lands on the deadline, not later
        assert row.last_attempt_at == START + 20
        assert all(o.next_at is None or o.next_at <= START + 20 for o in outcomes)
        await sender.send_due()
        assert (await outbox.get("msg_2")).state == "delivered"
        # Redeliver: a fresh window, and this time the receiver takes it.
        receiver.status = lambda r: 200
        await outbox.redeliver("msg_1", now=clock.t)
        [outcome] = await sender.send_due()
        assert outcome.state is DeliveryState.DELIVERED

    run(scenario())
    assert [msg for msg, _, code in receiver.got if code == 200] == ["msg_2", "msg_1"]


def test_410_gone_dead_letters_at_once() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    receiver = Receiver(clock, lambda r: 410)

    async def scenario() -> None:
        await fill(outbox, ["a"])
        sender = make_sender(outbox, receiver, clock, settings())
        [outcome] = await sender.send_due()
        assert outcome.state is DeliveryState.FAILED
        row = await outbox.get("msg_1")
        assert (row.state, row.attempts, row.last_status) == ("failed", 1, 410)

    run(scenario())


def test_connection_errors_and_timeouts_are_retried_with_a_readable_error() -> None:
    clock, outbox = Clock(), MemoryOutbox()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/down"):
            raise httpx.ConnectError("connection refused", request=request)
        await asyncio.sleep(10)
        return httpx.Response(200)

    async def scenario() -> None:
        await fill(outbox, ["down", "slow"])
        sender = make_sender(outbox, handler, clock, settings(timeout_s=0.05))
        outcomes = await sender.send_due()
        assert [o.state for o in outcomes] == [DeliveryState.PENDING] * 2
        down, slow = await outbox.get("msg_1"), await outbox.get("msg_2")
        assert down.last_error == "cannot connect to hooks.test:80 (127.0.0.1: connection refused)"
        assert slow.last_error == "no answer within 0.05 s"
        assert down.last_status is None and slow.attempts == 1

    run(scenario())


def test_a_target_the_guard_refuses_is_dead_lettered_without_a_request() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    receiver = Receiver(clock)

    async def scenario() -> None:
        await fill(outbox, ["a"], url="http://127.0.0.1:9")
        sender = make_sender(outbox, receiver, clock, settings(allow_private_targets=False))
        [outcome] = await sender.send_due()
        assert outcome.state is DeliveryState.FAILED
        row = await outbox.get("msg_1")
        assert row.last_error == "target refused: 127.0.0.1 is a loopback address"

    run(scenario())
    assert receiver.got == []


def test_the_webhook_id_is_stable_across_retries_and_the_timestamp_is_per_attempt() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["webhook-id"], request.headers["webhook-timestamp"]))
        return httpx.Response(500 if len(seen) < 3 else 200)

    async def scenario() -> None:
        await fill(outbox, ["a"])
        sender = make_sender(outbox, handler, clock, settings())
        for _ in range(3):
            await sender.send_due()
            clock.t += 10

    run(scenario())
    assert [msg for msg, _ in seen] == ["msg_1"] * 3
    assert [int(stamp) for _, stamp in seen] == [int(START), int(START) + 10, int(START) + 20]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            "http://metadata.example",
            "target refused: 169.254.169.254 is a link-local address, the cloud metadata service"
            " (metadata.example resolves to it)",
        ),
        ("gopher://hooks.test", "is not an absolute http or https URL"),
    ],
)
def test_a_name_that_resolves_inside_or_a_bad_url_is_dead_lettered(url: str, error: str) -> None:
    clock, outbox = Clock(), MemoryOutbox()
    receiver = Receiver(clock)

    async def scenario() -> None:
        await fill(outbox, ["a"], url=url)
        strict = settings(allow_private_targets=False)
        sender = make_sender(outbox, receiver, clock, strict, dns=Dns("169.254.169.254"))
        [outcome] = await sender.send_due()
        assert outcome.state is DeliveryState.FAILED
        row = await outbox.get("msg_1")
        assert row.last_error is not None and error in row.last_error

    run(scenario())
    assert receiver.got == []


def test_each_attempt_goes_to_the_address_it_checked_not_to_a_second_lookup() -> None:
    clock, outbox = Clock(), MemoryOutbox()
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers["host"]))
        return httpx.Response(503)

    async def scenario() -> None:
        await fill(outbox, ["a"], url="http://hooks.test:8080/a")
        dns = Dns("127.0.0.7", "127.0.0.9")  # the second attempt's answer differs
        sender = make_sender(outbox, handler, clock, settings(), dns=dns)
        await sender.send_due()
        clock.t += 10
        await sender.send_due()
        assert dns.asked == ["hooks.test", "hooks.test"], "one lookup per attempt"

    run(scenario())
    assert seen == [("127.0.0.7", "hooks.test:8080"), ("127.0.0.9", "hooks.test:8080")]
