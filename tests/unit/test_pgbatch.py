"""Group commit (`jobs._pgbatch`), with a writer that records its batches: a lone call is written
at once, calls arriving meanwhile go together, one key at most once per batch, a bad call fails
alone, a failure of the store fails everyone, a caller that gave up is not written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from comfyfleet.jobs._pgbatch import Batches, Failed


class Writer:
    """Answers each item doubled, after `gate` opens; refuses items named in `bad` (a batch
    holding one raises ValueError), or everything with OSError once `down`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.bad: set[int] = set()
        self.down = False

    async def write(self, items: list[int]) -> Sequence[int | Failed]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.down:
            raise OSError("store down")
        if self.bad.intersection(items):
            raise ValueError("a bad item")
        return [item * 2 if item >= 0 else Failed(KeyError(item)) for item in items]


def batches(writer: Writer) -> Batches[int, int]:
    """A bad item's ValueError is worth writing the batch again item by item; OSError is not."""
    return Batches(writer.write, alone=lambda exc: isinstance(exc, ValueError))


def test_a_lone_call_is_written_at_once_and_calls_meanwhile_go_together() -> None:
    async def body() -> None:
        writer = Writer()
        b = batches(writer)
        assert await b.submit(1) == 2
        writer.gate.clear()
        first = asyncio.ensure_future(b.submit(10))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the writer took [10] and waits at the gate
        rest = [asyncio.ensure_future(b.submit(i)) for i in (11, 12, 13)]
        await asyncio.sleep(0)
        writer.gate.set()
        assert await first == 20
        assert [await f for f in rest] == [22, 24, 26]
        assert writer.batches == [[1], [10], [11, 12, 13]]

    asyncio.run(body())


def test_a_key_goes_once_per_batch_and_the_size_is_bounded() -> None:
    async def body() -> None:
        writer = Writer()
        b = Batches(writer.write, key=lambda item: item % 10, most=3)
        writer.gate.clear()
        calls = [asyncio.ensure_future(b.submit(i)) for i in (1, 11, 2, 3, 4, 21)]
        await asyncio.sleep(0)
        writer.gate.set()
        assert [await c for c in calls] == [2, 22, 4, 6, 8, 42]
        # All six wait before the writer runs: 11 and 21 share 1's key, 4 is past the size.
        assert writer.batches == [[1, 2, 3], [11, 4], [21]]

    asyncio.run(body())


def test_a_bad_call_fails_alone_and_a_failed_result_only_its_caller() -> None:
    async def body() -> None:
        writer = Writer()
        writer.bad = {5}
        b = batches(writer)
        writer.gate.clear()
        calls = [asyncio.ensure_future(b.submit(i)) for i in (4, 5, -6, 7)]
        await asyncio.sleep(0)
        writer.gate.set()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert done[0] == 8 and done[3] == 14
        assert isinstance(done[1], ValueError)
        assert isinstance(done[2], KeyError)
        assert writer.batches == [[4, 5, -6, 7], [4], [5], [-6], [7]]

    asyncio.run(body())


def test_a_failure_of_the_store_fails_every_call_of_the_batch() -> None:
    async def body() -> None:
        writer = Writer()
        writer.down = True
        b = batches(writer)
        writer.gate.clear()
        calls = [asyncio.ensure_future(b.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        writer.gate.set()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(d, OSError) for d in done)
        assert writer.batches == [[1, 2, 3]]
        writer.down = False
        assert await b.submit(4) == 8  # the next call finds a writer again

    asyncio.run(body())


def test_a_caller_that_gave_up_before_its_batch_is_not_written() -> None:
    async def body() -> None:
        writer = Writer()
        b = batches(writer)
        writer.gate.clear()
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        given_up = asyncio.ensure_future(b.submit(2))
        kept = asyncio.ensure_future(b.submit(3))
        await asyncio.sleep(0)
        given_up.cancel()
        writer.gate.set()
        assert (await first, await kept) == (2, 6)
        with pytest.raises(asyncio.CancelledError):
            await given_up
        assert writer.batches == [[1], [3]]

    asyncio.run(body())


def test_a_writer_that_breaks_its_promise_fails_its_callers_not_the_next_ones() -> None:
    async def body() -> None:
        calls = 0

        async def short(items: list[int]) -> list[int]:
            nonlocal calls
            calls += 1
            return [] if calls == 1 else [item for item in items]  # first: one result short

        b: Batches[int, int] = Batches(short)
        with pytest.raises(ValueError):
            await b.submit(1)
        assert await b.submit(2) == 2

    asyncio.run(body())


def test_no_empty_batch_is_written_when_every_waiting_caller_gave_up() -> None:
    async def body() -> None:
        writer = Writer()
        b = batches(writer)
        writer.gate.clear()
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        writer.gate.set()
        assert await first == 2
        await asyncio.sleep(0)
        assert writer.batches == [[1]]

    asyncio.run(body())
