"""Live preview frames of running jobs: an in-process fan-out that may drop, and never waits.

ComfyUI sends a small JPEG or PNG of the latent image while a sampler runs, several a second. A
preview is only worth showing while it is new, so nothing here is stored: a frame goes to the
clients watching the job at that moment, and nowhere else. Each watcher has a small queue of its
own; a watcher that falls behind loses its oldest frames rather than slowing the publisher (the
dispatcher, which must keep reading ComfyUI's socket) or the other watchers.

Everything runs on the event loop's thread: `publish` is a plain call, safe from any coroutine or
callback of that loop (not from other threads).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType

from comfyfleet.errors import ComfyfleetError

FORMATS = frozenset({"jpeg", "png", "webp"})
"""Image formats a frame may have (what ComfyUI's preview encoders produce)."""

_ALIASES = {"jpg": "jpeg", "image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}


class PreviewError(ComfyfleetError):
    """A preview frame or a subscription was used in a way the hub does not support."""


@dataclass(frozen=True)
class PreviewFrame:
    """One preview image of one job. The bytes are shared by every subscriber, never copied."""

    job_id: str
    image_format: str
    data: bytes = field(repr=False)
    at: float

    @cached_property
    def base64(self) -> str:
        """The image as base64 text, encoded once however many clients send it."""
        return base64.b64encode(self.data).decode("ascii")


def canonical_format(name: str) -> str:
    """The canonical name of an image format (`jpg` -> `jpeg`); PreviewError for others."""
    canonical = _ALIASES.get(name.lower(), name.lower())
    if canonical not in FORMATS:
        raise PreviewError(
            f"unknown preview image format '{name}'",
            hint=f"publish one of {', '.join(sorted(FORMATS))}",
        )
    return canonical


class PreviewSubscription:
    """The frames of one job for one client, as an async context manager and async iterator:

        async with hub.subscribe(job_id) as frames:
            async for frame in frames:
                ...

    The queue holds the newest `size` frames; `dropped` counts the ones pushed out unseen.
    Iteration never ends by itself: the caller stops when the job does.
    """

    def __init__(self, hub: PreviewHub, job_id: str, size: int) -> None:
        self.job_id = job_id
        self.dropped = 0
        self._hub = hub
        self._frames: deque[PreviewFrame] = deque(maxlen=size)
        self._ready = asyncio.Event()
        self._active = False

    async def __aenter__(self) -> PreviewSubscription:
        if self._active:
            raise PreviewError(f"the preview subscription of job '{self.job_id}' is already open")
        self._hub._add(self)
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        self._hub._remove(self)
        self._frames.clear()

    def __aiter__(self) -> PreviewSubscription:
        return self

    async def __anext__(self) -> PreviewFrame:
        return await self.get()

    async def get(self) -> PreviewFrame:
        """The oldest frame still queued, waiting for one if there is none."""
        if not self._active:
            raise PreviewError(
                f"the preview subscription of job '{self.job_id}' is not open",
                hint="use it inside `async with hub.subscribe(job_id) as frames:`",
            )
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def _offer(self, frame: PreviewFrame) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1  # the deque pushes the oldest out
        self._frames.append(frame)
        self._ready.set()


class PreviewHub:
    """Fan-out of preview frames by job id. `queue_size` frames wait per subscriber at most."""

    def __init__(self, *, queue_size: int = 2) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self._size = queue_size
        self._subscribers: dict[str, list[PreviewSubscription]] = {}

    def publish(self, job_id: str, image_format: str, data: bytes) -> int:
        """Hand a frame to every current subscriber of the job; returns how many got it.

        Never blocks and never raises for a slow or missing subscriber; raises PreviewError only
        for an image format it does not know."""
        fmt = canonical_format(image_format)
        subscribers = self._subscribers.get(job_id)
        if not subscribers:
            return 0
        frame = PreviewFrame(job_id, fmt, bytes(data), time.time())
        for subscriber in subscribers:
            subscriber._offer(frame)
        return len(subscribers)

    def subscribe(self, job_id: str) -> PreviewSubscription:
        """A subscription that receives frames from the moment it is entered until it exits."""
        return PreviewSubscription(self, job_id, self._size)

    def watched(self) -> list[str]:
        """The jobs someone is watching now (what a feed from another process must fetch)."""
        return list(self._subscribers)

    def subscriber_count(self, job_id: str | None = None) -> int:
        """Open subscriptions of one job, or of every job."""
        if job_id is not None:
            return len(self._subscribers.get(job_id, ()))
        return sum(len(subs) for subs in self._subscribers.values())

    def _add(self, subscription: PreviewSubscription) -> None:
        self._subscribers.setdefault(subscription.job_id, []).append(subscription)

    def _remove(self, subscription: PreviewSubscription) -> None:
        subscribers = self._subscribers.get(subscription.job_id, [])
        if subscription in subscribers:
            subscribers.remove(subscription)
        if not subscribers:
            self._subscribers.pop(subscription.job_id, None)
