"""Small waits of the instance loop: sleep until something happens or a timeout passes."""

from __future__ import annotations

import asyncio


def shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


async def wait_any(
    future: asyncio.Future[int], events: tuple[asyncio.Event, ...], timeout: float
) -> None:
    """Sleep until `future` completes, one of `events` is set, or `timeout` passes."""
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(e.wait()) for e in events]
    pending: set[asyncio.Future[object]] = {*waiters, future}  # type: ignore[arg-type]
    try:
        await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
