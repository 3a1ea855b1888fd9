"""An attached server: a ComfyUI that comfyfleet did not start (`--attach URL`), watched and fed
with jobs but never started, stopped or restarted, since its process belongs to someone else.

Its whole state comes from active probes (`GET /system_stats`, then `GET /prompt` for busy), the
prober supervised instances use:

    STOPPED -> PROBING -> READY <-> BUSY         (it answers as ComfyUI)
    PROBING -> UNREACHABLE | NOT_COMFYUI         (nothing answers / something else answers)
    READY/BUSY -> UNREACHABLE | NOT_COMFYUI      (`attach_failures` failed probes in a row)
    UNREACHABLE <-> NOT_COMFYUI -> READY/BUSY    (it answers again, as ComfyUI)
    any -> STOPPED                               (comfyfleet stops watching; the server runs on)

A serving server needs a few failed probes in a row before it is lost, so one slow answer does
not send its jobs elsewhere; one that is not serving moves at the first probe that says so.
Leaving READY/BUSY is what makes the dispatcher fail its jobs in flight as retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from comfyfleet.errors import SupervisorError
from comfyfleet.supervise._probe import ProbeResult, UrlProber
from comfyfleet.supervise._settings import FleetSettings
from comfyfleet.supervise._states import SERVING, InstanceEvent, InvalidTransition, State
from comfyfleet.supervise._status import InstanceStatus

_WATCHED = frozenset({State.READY, State.BUSY, State.UNREACHABLE, State.NOT_COMFYUI})
_ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.PROBING}),
    State.PROBING: _WATCHED | {State.STOPPED},
    State.READY: _WATCHED - {State.READY} | {State.STOPPED},
    State.BUSY: _WATCHED - {State.BUSY} | {State.STOPPED},
    State.UNREACHABLE: _WATCHED - {State.UNREACHABLE} | {State.STOPPED},
    State.NOT_COMFYUI: _WATCHED - {State.NOT_COMFYUI} | {State.STOPPED},
}


def check_attached_transition(old: State, new: State) -> None:
    if new not in _ALLOWED.get(old, frozenset()):
        raise InvalidTransition(f"attached server cannot go from {old} to {new}")


@dataclass(frozen=True)
class AttachedSpec:
    """One attached server: its instance index (after the supervised ones) and base URL."""

    index: int
    url: str

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class AttachedInstance:
    """The reduced state machine of one attached server, driven by a probe loop."""

    def __init__(
        self,
        spec: AttachedSpec,
        settings: FleetSettings,
        *,
        prober: UrlProber,
        emit: Callable[[InstanceEvent], None],
    ) -> None:
        self.spec = spec
        self.settings = settings
        self._prober = prober
        self._emit = emit
        self.state = State.STOPPED
        self.failures = 0
        """Failed probes in a row."""
        self.ready_since: float | None = None
        self.watched_since: float | None = None
        self.version: str | None = None
        self.last_reason = ""
        self._task: asyncio.Task[None] | None = None

    # --- control ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"attached-{self.spec.index}")

    async def stop(self) -> None:
        """Stop watching (a probe in flight is abandoned); the server itself is left alone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> InstanceStatus:
        return InstanceStatus(
            index=self.spec.index,
            state=self.state,
            pid=None,
            port=self.spec.port,
            device="attached",
            started_at=self.watched_since,
            ready_since=self.ready_since if self.state in SERVING else None,
            restarts=0,
            rss_bytes=None,
            version=self.version,
            reason=self.last_reason,
            url=self.spec.url,
            attached=True,
        )

    # --- the state machine -----------------------------------------------------------------
    def observe(self, result: ProbeResult) -> None:
        """Move on one probe's answer (the loop calls it; tests call it directly)."""
        if result.ok:
            self.failures = 0
            self.version = result.version or self.version
            wanted = State.BUSY if result.busy else State.READY
            if self.state not in SERVING:
                self.ready_since = time.time()
                self._set(wanted, f"answering at {self.spec.url}")
            elif wanted != self.state:
                self._set(wanted)
            return
        self.failures += 1
        error = result.error or "no answer"
        if self.state in SERVING:
            if self.failures < self.settings.attach_failures:
                return
            error = f"{self.failures} probes failed in a row: {error}"
        wanted = State.NOT_COMFYUI if result.not_comfyui else State.UNREACHABLE
        if wanted != self.state:
            self._set(wanted, error)
        else:
            self.last_reason = error

    def _set(self, new: State, reason: str = "") -> None:
        check_attached_transition(self.state, new)
        old, self.state, self.last_reason = self.state, new, reason
        self._emit(
            InstanceEvent(
                self.spec.index, old, new, reason, None, self.spec.port, url=self.spec.url
            )
        )

    async def _run(self) -> None:
        self.watched_since = time.time()
        self._set(State.PROBING, f"watching {self.spec.url}")
        try:
            while True:
                self.observe(await self._prober.probe_url(self.spec.url))
                await asyncio.sleep(self.settings.probe_interval_s)
        finally:
            self._set(State.STOPPED, "no longer watched (the server itself runs on)")


def attached_specs(urls: tuple[str, ...], first_index: int) -> list[AttachedSpec]:
    """Specs for the `fleet.attach` URLs, numbered after the supervised instances. The same URL
    twice would feed one server through two lanes and count it twice: refused."""
    seen: set[str] = set()
    for url in urls:
        if url in seen:
            raise SupervisorError(
                f"attached server {url} is listed twice", hint="list each server once"
            )
        seen.add(url)
    return [AttachedSpec(first_index + i, url) for i, url in enumerate(urls)]
