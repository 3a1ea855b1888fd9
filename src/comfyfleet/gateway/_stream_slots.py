"""A bound on the event streams the gateway holds open, in all and per API key.

Each open Server-Sent Events stream holds a feed on the job store, a task and a socket for as
long as its job runs (and jobs can run for hours). Without a bound, one client opening streams
in a loop could hold the gateway's memory and the store's listeners hostage; polling stays
available whatever the count. A stream past either bound is refused with 429 `too_many_streams`
and a Retry-After (Comfy API v2's code for it; the native API uses the same), and takes nothing.
"""

from __future__ import annotations

from collections import Counter

from comfyfleet.gateway._errors import ApiError

TOO_MANY_STREAMS = "too_many_streams"
_ANONYMOUS = ""


class StreamSlot:
    """One open stream's place; `release` is idempotent (a stream may end in several ways)."""

    def __init__(self, slots: StreamSlots, owner: str) -> None:
        self._slots = slots
        self._owner = owner
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._give_back(self._owner)


class StreamSlots:
    def __init__(self, total: int, per_key: int, retry_after_s: int = 5) -> None:
        self.total = total
        self.per_key = per_key
        self.retry_after_s = retry_after_s
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def take(self, owner: str | None) -> StreamSlot:
        """A slot for `owner`'s new stream, or 429 `too_many_streams` (keys off: one pool)."""
        who = owner or _ANONYMOUS
        if self.open >= self.total:
            raise self._refusal(f"the server holds {self.total} event streams, its limit")
        if owner is not None and self._open[who] >= self.per_key:
            raise self._refusal(f"this API key holds {self.per_key} event streams, its limit")
        self._open[who] += 1
        return StreamSlot(self, who)

    def _give_back(self, owner: str) -> None:
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]

    def _refusal(self, why: str) -> ApiError:
        return ApiError(
            429,
            TOO_MANY_STREAMS,
            f"{why}; close a stream or poll the job instead",
            headers={"Retry-After": str(self.retry_after_s)},
        )
