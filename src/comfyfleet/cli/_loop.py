"""Running the long-lived commands' event loop: uvloop where it is installed.

`serve` spends most of its time in the event loop (HTTP in, HTTP and WebSocket out to the
instances, timers); uvloop runs the same asyncio code with less overhead per callback, which is
the gateway's added latency per job. It is optional: without it (Windows, or
`COMFYFLEET_LOOP=asyncio`) the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("COMFYFLEET_LOOP", "auto").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when available."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)
