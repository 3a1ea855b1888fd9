"""The dispatcher: keeps every serving instance busy with jobs from the store.

It runs one :class:`Lane` per instance plus a few small loops: filling free slots when woken
(a job was enqueued or finished; with a store that announces them, also jobs enqueued by other
processes) or every `poll_s` (jobs enqueued by another process), heartbeats for the leases of
in-flight jobs, cancel requests, and releasing leases that expired because some worker died.
Instance state comes from the supervisor's events: an instance leaving ready/busy fails its
in-flight jobs as retryable, so they run elsewhere. An event with a URL is an attached server's:
its lane talks to that URL and moves files to and from it (`_remote`). With `stall` set, jobs
that make no progress are interrupted and their instance restarted (`_stall`); a lane a
watchdog took out of service (`paused`) takes jobs again once its instance is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.comfy import ComfyClient, ComfyEvents
from comfyfleet.jobs._cancels import stop_cancelled
from comfyfleet.jobs._failures import JobError
from comfyfleet.jobs._lane import Lane, PreviewSink
from comfyfleet.jobs._limits import JobLimits, timeout_error
from comfyfleet.jobs._model import JobStatus
from comfyfleet.jobs._prepare import Preparer
from comfyfleet.jobs._remote import RemoteFolders, RemoteServer
from comfyfleet.jobs._results import OutputPublisher
from comfyfleet.jobs._routing import Affinity
from comfyfleet.jobs._stall import RestartInstance, StallSettings, StallWatch
from comfyfleet.jobs._store import JobStore, QueueSignal
from comfyfleet.jobs._watch import JobWatch, NoWatch
from comfyfleet.logs import log_context
from comfyfleet.supervise import SERVING, InstanceEvent, State

log = logging.getLogger("comfyfleet.jobs")

ClientFactory = Callable[[str], ComfyClient]
EventsFactory = Callable[[str, str], ComfyEvents]


@dataclass(frozen=True)
class DispatcherSettings:
    slots_per_instance: int = 2
    lease_s: float = 15.0
    poll_s: float = 0.25
    cancel_poll_s: float = 0.2
    limits: JobLimits = field(default_factory=JobLimits)
    expire_poll_s: float = 1.0
    claim_grace_s: float = 60.0
    """How long a claimed job may wait for its submit before the watchdog ends its attempt
    (longer than a submit can take: the ComfyUI client's own timeout is 30 s)."""
    affinity_max_delay_s: float | None = 30.0
    """How long model affinity may keep a job waiting (see `_routing`): an instance prefers jobs
    for the models it holds, but takes a job queued this long whatever it needs. None: no
    affinity at all, jobs go in plain order."""
    stall: StallSettings | None = None
    """The stall watchdog (see `_stall`); None: off."""


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        settings: DispatcherSettings | None = None,
        *,
        host: str = "127.0.0.1",
        make_client: ClientFactory | None = None,
        make_events: EventsFactory | None = None,
        worker: str | None = None,
        publisher: OutputPublisher | None = None,
        on_preview: PreviewSink | None = None,
        prepare: Preparer | None = None,
        remote: RemoteFolders | None = None,
        watch: JobWatch | None = None,
        restart: RestartInstance | None = None,
    ) -> None:
        self.store = store
        self.watch: JobWatch = watch or NoWatch()
        """Told of the work the lanes do (metrics)."""
        self.remote = remote or RemoteFolders()
        self.prepare = prepare
        self.publisher = publisher
        self.on_preview = on_preview
        self.settings = settings or DispatcherSettings()
        self.host = host
        self.worker = worker or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.wake = asyncio.Event()
        self._make_client = make_client or (lambda url: ComfyClient(url, timeout=30))
        self._make_events = make_events or (lambda url, cid: ComfyEvents(url, cid))
        self.lanes: dict[int, Lane] = {}
        self.on_disk: frozenset[str] = frozenset()
        """The model files of this machine (`folder_type/name`), for affinity: the agent
        refreshes it from its model index."""
        stall = self.settings.stall
        self.stalls = None if stall is None else StallWatch(stall, restart, self.wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._followers: dict[int, asyncio.Task[None]] = {}
        self._started = False

    # --- instance state ------------------------------------------------------------------
    def add_instance(self, index: int, port: int | None = None, *, url: str | None = None) -> Lane:
        """A lane for the instance at `port` on our host (replacing one for an older port), or
        for the attached server at `url`, which shares no folder with us."""
        attached = url is not None
        if url is None:
            shown = f"[{self.host}]" if ":" in self.host else self.host
            url = f"http://{shown}:{port}"
        old = self.lanes.get(index)
        if old is not None and old.base_url == url:
            return old
        client = self._make_client(url)
        lane = Lane(
            index,
            url,
            store=self.store,
            worker=self.worker,
            slots=self.settings.slots_per_instance,
            lease_s=self.settings.lease_s,
            client=client,
            events=self._make_events(url, f"{self.worker}-{index}"),
            wake=self.wake,
            publisher=self.publisher,
            on_preview=self.on_preview,
            limits=self.settings.limits,
            prepare=self.prepare,
            remote=RemoteServer(self.remote, client) if attached else None,
            routing=self._affinity,
            watch=self.watch,
        )
        lane.peers = self.lanes.values
        if old is not None:
            lane.in_flight = old.in_flight
            self._spawn(old.events.aclose())
            self._spawn(old.client.aclose())
        self.lanes[index] = lane
        if self._started:
            self._follow(lane)
        return lane

    def _affinity(self, loaded: frozenset[str], may_switch: bool) -> Affinity | None:
        delay = self.settings.affinity_max_delay_s
        return None if delay is None else Affinity(loaded, self.on_disk, delay, may_switch)

    def loaded_models(self, index: int) -> frozenset[str]:
        """What instance `index` holds, as far as its lane knows (for the fleet registry)."""
        lane = self.lanes.get(index)
        return frozenset() if lane is None else lane.loaded

    def on_instance_event(self, event: InstanceEvent) -> None:
        """Supervisor listener: keep lanes in step with instance states."""
        serving = event.new in SERVING
        lane = self.lanes.get(event.instance)
        if serving and event.url is not None:
            lane = self.add_instance(event.instance, url=event.url)
        elif serving and event.port is not None:
            lane = self.add_instance(event.instance, event.port)
        if lane is None:
            return
        if lane.paused is not None and serving:
            if event.new == State.BUSY and event.old in SERVING:  # still the stuck process
                return
            log.warning("instance %s takes jobs again (%s)", lane.index, event.new)
            lane.paused = None
        if lane.serving and not serving and lane.in_flight:
            self._spawn(lane.lose_all(event.reason or f"went {event.new}"))
        if serving and not lane.serving:  # (back) in service: listen to this process first
            lane.listening = False
            lane.events.reconnect()
        lane.serving = serving
        if serving:
            self.wake.set()

    def notify(self) -> None:
        """A job was enqueued in this process: fill slots now instead of at the next poll."""
        self._fresh_work()
        self.wake.set()

    def _fresh_work(self) -> None:
        """A new job may suit any lane, including one whose last claim found nothing."""
        for lane in self.lanes.values():
            lane.starved = False

    async def dispatch(self) -> None:
        """Start filling free slots now: the gateway calls this right after an enqueue, so a
        job that finds an idle instance goes to it at once, without waiting for the fill loop
        to be scheduled (under a burst of submissions that wait is what leaves an instance
        idle). The fill runs in tasks of the lanes and is not awaited: ComfyUI answers
        POST /prompt only once its worker thread lets go of the GIL, often after the graph
        ran, and a submission held for that answer reached its client 10-20 ms late."""
        self._fresh_work()
        for lane in self._emptiest_first():
            if lane.free_slots() > 0:
                lane.fill_soon()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def _follow(self, lane: Lane) -> None:
        previous = self._followers.get(lane.index)
        if previous is not None:
            previous.cancel()
        self._followers[lane.index] = asyncio.create_task(lane.follow())

    # --- loops -----------------------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        if isinstance(self.store, QueueSignal):  # jobs enqueued by other processes wake us too
            self.store.on_queued(self.notify)
        loops = [
            self._fill_loop(),
            self._heartbeat_loop(),
            self._cancel_loop(),
            self._expire_loop(),
            *([] if self.stalls is None else [self._stall_loop()]),
        ]
        self._tasks += [asyncio.create_task(c) for c in loops]
        for lane in self.lanes.values():
            self._follow(lane)

    async def stop(self) -> None:
        for lane in self.lanes.values():
            await lane.events.aclose()
        side = [t for lane in self.lanes.values() for t in lane.side_tasks()]
        tasks = [*self._tasks, *self._followers.values(), *side]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for lane in self.lanes.values():
            await lane.client.aclose()

    async def _fill_loop(self) -> None:
        released_at = float("-inf")
        while True:
            self.wake.clear()
            # A write transaction: once per poll interval, not at every wake (every job's end
            # wakes this loop, and leases last many poll intervals).
            if time.monotonic() - released_at >= self.settings.poll_s:
                released_at = time.monotonic()
                try:
                    await self.store.release_expired()
                except Exception:  # the store is unreachable for now: the next round tries
                    log.exception("releasing expired leases failed")
            for lane in self._emptiest_first():
                try:
                    await lane.fill()
                except Exception:  # a store or instance hiccup must not stop dispatching
                    log.exception("filling instance %s failed", lane.index)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_s):
                    await self.wake.wait()

    def _emptiest_first(self) -> list[Lane]:
        """Fill the idlest instance first so load spreads over every GPU."""
        return sorted(self.lanes.values(), key=lambda lane: (len(lane.in_flight), lane.completed))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self.watchdog()
            except Exception:  # a store hiccup: the next round tries again
                log.exception("checking the leased jobs failed")
            ids = [f.job.id for lane in self.lanes.values() for f in lane.in_flight.values()]
            ids += [job_id for lane in self.lanes.values() for job_id in lane.finishing]
            if ids:
                try:
                    await self.store.heartbeat(self.worker, ids, lease_s=self.settings.lease_s)
                except Exception:  # the store is away: renew at the next round (leases last 3)
                    log.exception("renewing the leases of running jobs failed")

    async def watchdog(self, now: float | None = None) -> list[str]:
        """End the attempts of leased jobs that nothing works on, before their leases are
        renewed: a lane whose follower died loses its jobs (they run again), and a job claimed
        or preparing without a live task fails its attempt. Returns the ids it ended."""
        ended: list[str] = []
        for lane in list(self.lanes.values()):
            follower = self._followers.get(lane.index)
            if self._started and lane.in_flight and (follower is None or follower.done()):
                log.error("instance %s: its event follower stopped; restarting it", lane.index)
                ended += [f.job.id for f in lane.in_flight.values()]
                await lane.lose_all("its event follower stopped")
                self._follow(lane)
            for prompt_id in lane.stranded(self.settings.claim_grace_s, now):
                job_id = lane.in_flight[prompt_id].job.id
                ended.append(job_id)
                error = JobError(
                    "internal_error",
                    f"instance {lane.index}: nothing was working on the job (watchdog)",
                    retryable=True,
                    details={"instance": lane.index},
                )
                with log_context(job_id=job_id, instance=lane.index):
                    await lane.fail_attempt(prompt_id, error)
        return ended

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cancel_poll_s)
            for lane in list(self.lanes.values()):
                if not lane.in_flight:
                    continue
                try:
                    await stop_cancelled(lane)
                except Exception:  # a store hiccup must not end cancelling for good
                    log.exception("checking instance %s for cancelled jobs failed", lane.index)

    async def _stall_loop(self) -> None:
        assert self.stalls is not None
        while True:
            await asyncio.sleep(self.stalls.settings.check_s)
            try:
                await self.stalls.check(self.lanes.values())
            except Exception:  # an instance or store hiccup: the next round looks again
                log.exception("checking for stalled jobs failed")

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.expire_poll_s)
            try:
                await self.expire_queued()
            except Exception:  # a store hiccup: try again at the next round
                log.exception("expiring queued jobs failed")

    async def drain(self, timeout: float | None = None) -> None:
        """Run until no job is queued and none is in flight here, then return: a burst mode
        for tests and one-off batches, which wait on this instead of sleeping. Raises
        TimeoutError after `timeout` seconds. The dispatcher must be started."""
        async with asyncio.timeout(timeout):
            while True:
                self.wake.clear()
                await self.dispatch()
                if self._idle() and await self.store.count(JobStatus.QUEUED) == 0:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_s):
                        await self.wake.wait()

    def _idle(self) -> bool:
        """No job held anywhere: none in flight, being claimed, prepared or stored. (A refill
        task that finds nothing to claim holds none, and `dispatch` starts one each round.)"""
        return all(lane.holds_nothing() for lane in self.lanes.values())

    async def expire_queued(self, now: float | None = None) -> list[str]:
        """Fail the queued jobs that waited longer than their queue timeout."""
        now = time.time() if now is None else now
        expired: list[str] = []
        cursor: str | None = None
        while True:
            jobs, cursor = await self.store.list_jobs(
                status=JobStatus.QUEUED, limit=500, cursor=cursor
            )
            for job in jobs:
                queued_s, _ = self.settings.limits.for_job(job.options)
                if queued_s is not None and now - job.queued_at > queued_s:
                    error = timeout_error("queued", queued_s)
                    if await self.store.fail_queued(job.id, error, now=now) is not None:
                        log.info("job %s: %s", job.id, error["message"], extra={"job_id": job.id})
                        expired.append(job.id)
            if cursor is None:
                return expired
