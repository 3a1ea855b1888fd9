"""Group commit: calls that arrive while a write is under way go together in the next one.

On PostgreSQL a change costs a few round trips, a statement the server parses and plans, and
(for a job's state) a wait for the disk; none of these grows much with the number of rows the
statement writes. So the store does not send each call's transaction on its own: a call joins
the batch of its kind, and when no batch of that kind is being written, the waiting calls are
written together in one transaction. A lone call goes at once (no timer, so it waits no
longer than it would alone); under load a batch holds everything that arrived while the
previous one was written, which is how the store keeps up with many gateways and dispatchers
on a couple of cores.

A batch that fails for a reason that may be one call's (a value the database refuses, a
deadlock) is written again one call at a time, so that a bad call fails alone; a failure that
is everyone's (the store is unreachable or closed) fails every call of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 -- a call's item
R = TypeVar("R")

MOST = 64
"""Calls per batch at most: bounds one transaction's locks and the statement's size."""


class Failed:
    """What a batch writer returns, in a call's place, for a call that failed alone."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


Write = Callable[[list[I]], Awaitable[Sequence["R | Failed"]]]


class Batches(Generic[I, R]):
    """`submit(item)` returns `write([..., item, ...])`'s result for that item.

    `write` gets the items in arrival order and returns one result per item, in the same
    order. `key` names what must not appear twice in one batch (two changes of one job):
    a second item with a key already in the batch waits for the next one. `alone(error)` says
    whether a batch that raised `error` should be written again one item at a time."""

    def __init__(
        self,
        write: Write[I, R],
        *,
        key: Callable[[I], Hashable] | None = None,
        alone: Callable[[BaseException], bool] = lambda _: False,
        most: int = MOST,
    ) -> None:
        self._write = write
        self._key = key
        self._alone = alone
        self._most = most
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches written so far (tests and benchmarks read how well calls were grouped)."""

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                if not batch:  # every caller waiting gave up
                    continue
                try:
                    await self._run(batch)
                except Exception as exc:  # the writer's own fault: its callers hear of it
                    _fail(batch, exc)
        finally:
            self._writer = None

    def _take(self) -> list[tuple[I, asyncio.Future[R]]]:
        """The next batch: waiting calls not given up on, in order, a key at most once."""
        batch: list[tuple[I, asyncio.Future[R]]] = []
        left: list[tuple[I, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for item, future in self._waiting:
            if future.done():  # its caller was cancelled before it was written
                continue
            key = None if self._key is None else self._key(item)
            if len(batch) >= self._most or (key is not None and key in keys):
                left.append((item, future))
                continue
            keys.add(key)
            batch.append((item, future))
        self._waiting = left
        return batch

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        self.batches += 1
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # handed to the callers, who raise it
            if len(batch) > 1 and self._alone(exc):
                for one in batch:
                    await self._run([one])
                return
            _fail(batch, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Failed):
                future.set_exception(result.error)
            else:
                future.set_result(result)


def _fail(batch: list[tuple[I, asyncio.Future[R]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
