"""How the store tests run their coroutines: `run(coro)`, on the test's own loop when it has one.

A store bound to an event loop (PostgreSQL's pool and listener live on the loop that opened
them) needs every call of a test on that loop: its fixture requests `loop`, and `run` then uses
it. Without it, each `run` gets a fresh loop, as `asyncio.run` gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


class _Loop:
    """The running test's loop, while its `loop` fixture is active."""

    runner: asyncio.Runner | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    runner = _Loop.runner
    return asyncio.run(coro) if runner is None else runner.run(coro)


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    """One event loop for the whole test: request it from a fixture that opens a store on it."""
    with asyncio.Runner() as runner:
        _Loop.runner = runner
        try:
            yield runner
        finally:
            _Loop.runner = None
