"""One instance's lane: claims jobs for its free slots, submits them, follows their progress.

Every instance keeps two jobs: one running and one queued behind it inside ComfyUI, so the GPU
never waits for its next job. The lane chooses each prompt id before submitting, so a message
that arrives before the submit returns (fast graphs finish in milliseconds) is never lost.
Taking a claimed job to ComfyUI is `_starting`'s; stopping one from outside (a cancel, a
timeout) `_cancels`'; reporting how an attempt ended `_endings`'.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from comfyfleet.comfy import (
    ComfyClient,
    ComfyError,
    ComfyEvents,
    ComfyMessage,
    ComfyUnavailable,
    Connected,
    Disconnected,
    PreviewFrame,
    new_prompt_id,
)
from comfyfleet.jobs._endings import Endings
from comfyfleet.jobs._failures import JobError, attempt_error, node_error
from comfyfleet.jobs._flight import InFlight as _InFlight
from comfyfleet.jobs._limits import JobLimits
from comfyfleet.jobs._outputs import outputs_from_history
from comfyfleet.jobs._prepare import Preparer
from comfyfleet.jobs._progress_events import ProgressEvents
from comfyfleet.jobs._remote import RemoteServer
from comfyfleet.jobs._results import OutputPublisher
from comfyfleet.jobs._routing import Affinity
from comfyfleet.jobs._starting import Starter
from comfyfleet.jobs._store import JobStore
from comfyfleet.jobs._watch import JobWatch, NoWatch
from comfyfleet.logs import log_context

PreviewSink = Callable[[str, str, bytes], object]
"""Called with (job id, image format, bytes) for each preview frame of a running job."""

Routing = Callable[[frozenset[str], bool], Affinity | None]
"""What a lane claims with, given the models its instance holds and whether it may take a job
that needs another model (see `_routing`)."""

log = logging.getLogger("comfyfleet.jobs")

_ENDS = frozenset({"execution_success", "execution_error", "execution_interrupted"})


class Lane:
    def __init__(
        self,
        index: int,
        base_url: str,
        *,
        store: JobStore,
        worker: str,
        slots: int,
        lease_s: float,
        client: ComfyClient,
        events: ComfyEvents,
        wake: asyncio.Event,
        publisher: OutputPublisher | None = None,
        on_preview: PreviewSink | None = None,
        limits: JobLimits | None = None,
        prepare: Preparer | None = None,
        remote: RemoteServer | None = None,
        routing: Routing | None = None,
        watch: JobWatch | None = None,
    ) -> None:
        self.index = index
        self.watch: JobWatch = watch or NoWatch()
        self.routing = routing
        self.loaded: frozenset[str] = frozenset()
        """The models of the last job that succeeded here: what the instance holds in memory."""
        self.remote = remote
        """Set for a server that shares no folder with us (attached): see `_remote`."""
        self.base_url = base_url
        self.store = store
        self.worker = worker
        self.slots = slots
        self.lease_s = lease_s
        self.client = client
        self.events = events
        self.client_id = events.client_id
        self.wake = wake
        self.serving = False
        self.listening = False
        """Whether the instance's WebSocket is connected: a prompt submitted before it is would
        run unheard (no progress, outputs only from the history), as after a fast restart."""
        self.paused: str | None = None
        """Why a watchdog took the instance out of service (until it is ready again)."""
        self.claims = 0
        """Jobs claimed so far: a watchdog tells an idle instance from one between jobs."""
        self.in_flight: dict[str, _InFlight] = {}  # prompt id -> job
        self.completed = 0
        self._claiming = 0
        self.starved = False
        """The last claim found nothing for this instance; a new enqueue clears it."""
        self.peers: Callable[[], Iterable[Lane]] = tuple
        """The other lanes of the dispatcher: a lane leaves a job to an emptier one."""
        self.on_preview = on_preview
        self.limits = limits or JobLimits()
        self.prepare = prepare
        self.starter = Starter(self)
        self.progress = ProgressEvents(store, worker, index)
        self.endings = Endings(
            store, worker, index, publisher=publisher, remote=remote, wake=wake, watch=self.watch
        )
        self.filling: set[asyncio.Task[None]] = set()
        """Refills started when a slot came free."""
        self._fill_pending = False

    # --- claiming and submitting -----------------------------------------------------------
    @property
    def preparing(self) -> set[asyncio.Task[None]]:
        """Jobs whose model files are being made ready, each in a task of its own."""
        return self.starter.preparing

    def holds_nothing(self) -> bool:
        return not (self.in_flight or self._claiming or self.preparing or self.finishing)

    @property
    def finishing(self) -> dict[str, asyncio.Task[None]]:
        """Jobs done in ComfyUI whose outputs are being stored, or whose end waits for the store
        to answer: still leased, slot already free."""
        return self.endings.tasks

    def side_tasks(self) -> list[asyncio.Task[None]]:
        """Work running beside the follower: model downloads, output uploads, refills."""
        return [*self.preparing, *self.finishing.values(), *self.filling, *self.progress.tasks]

    def holding(self) -> frozenset[str]:
        """What the instance will hold when a job claimed now starts: the models of the last
        job queued on it (the slots are a pipeline), else those it ran last. Claiming by what
        already ran would alternate models: A running, B queued, A claimed after B."""
        for flight in reversed(self.in_flight.values()):
            if flight.job.models:
                return frozenset(flight.job.models)
        return self.loaded

    def _emptier_peer(self) -> Lane | None:
        """A serving lane running fewer jobs than this one, claiming now or able to find one:
        filling a second slot here while another instance idles makes the job wait for ours."""
        mine = len(self.in_flight)
        for peer in self.peers():
            if peer is self or not peer.serving or len(peer.in_flight) >= mine:
                continue
            if peer._claiming or (not peer.starved and peer.free_slots() > 0):
                return peer
            if not peer.listening:  # back in service, its socket connecting: it
                return peer  # fills the moment it listens (see `follow`)
        return None

    def _affinity(self) -> Affinity | None:
        """What the next claim asks for: a slot behind running work takes only a job that needs
        no model switch (see `Affinity.may_switch`)."""
        if self.routing is None:
            return None
        return self.routing(self.holding(), not self.in_flight)

    def free_slots(self) -> int:
        if not (self.serving and self.listening):
            return 0
        return self.slots - len(self.in_flight) - self._claiming

    async def fill(self) -> int:
        """Claim and submit jobs until the slots are full or the queue is empty.

        Safe to call from several tasks at once (the gateway fills on submit, the follower on
        completion, the dispatcher's loop on its poll): a slot is reserved before the claim."""
        with log_context(instance=self.index):
            return await self._fill()

    async def _fill(self) -> int:
        submitted = 0
        while self.free_slots() > 0:
            if self._claiming:  # one claim at a time: each sees the one before (`holding`),
                break  # and the fill that claims goes on to the next slot
            emptier = self._emptier_peer()
            if emptier is not None:
                # A job claimed now would queue behind ours while that instance idles: it
                # tries first, and its fill wakes the dispatcher, whose next round comes back.
                emptier.fill_soon()
                break
            prompt_id = new_prompt_id()
            self._claiming += 1
            try:
                job = await self.store.claim(
                    self.worker,
                    lease_s=self.lease_s,
                    instance=self.index,
                    prompt_id=prompt_id,
                    affinity=self._affinity(),
                )
                if job is not None:
                    self.in_flight[prompt_id] = _InFlight(job, prompt_id)
                    self.claims += 1
                self.starved = job is None
            finally:
                self._claiming -= 1
            if job is None:
                break
            with log_context(job_id=job.id):
                submitted += await self.starter.start(job, prompt_id)
        return submitted

    def _at(self, doing: str, *, from_job: bool = False) -> dict[str, Any]:
        return {"instance": self.index, "doing": doing, "from_job": from_job}

    async def fail_attempt(self, prompt_id: str, error: JobError) -> None:
        """End the attempt of the job in `prompt_id`'s slot and free the slot; a no-op when the
        job already left it (cancelled, timed out or lost meanwhile)."""
        flight = self.leave(prompt_id)
        if flight is not None:
            await self.progress.flush()
            await self.endings.fail(flight.job, error)

    def leave(self, prompt_id: str) -> _InFlight | None:
        """Free `prompt_id`'s slot, telling the watch how long its last phase lasted."""
        flight = self.in_flight.pop(prompt_id, None)
        ending = None if flight is None else flight.last_phase()
        if ending is not None:
            self.watch.phase(*ending)
        return flight

    def stranded(self, claim_grace_s: float, now: float | None = None) -> list[str]:
        """The prompt ids of jobs this lane holds that nothing works on (see InFlight)."""
        now = time.monotonic() if now is None else now
        return [p for p, flight in self.in_flight.items() if flight.stranded(claim_grace_s, now)]

    # --- following ComfyUI ---------------------------------------------------------------
    async def follow(self) -> None:
        """Consume the instance's WebSocket for as long as the lane lives."""
        with log_context(instance=self.index):
            await self._follow()

    async def _follow(self) -> None:
        async for item in self.events:
            if isinstance(item, ComfyMessage):
                await self._on_message_guarded(item)
            elif isinstance(item, PreviewFrame):
                self._forward_preview(item)
            elif isinstance(item, Connected):
                self.listening = True
                if self.serving:
                    self.fill_soon()
                for flight in self.in_flight.values():  # messages may be lost: not silence
                    flight.heard_at = None if flight.heard_at is None else time.monotonic()
                await self.reconcile()
            elif isinstance(item, Disconnected):
                self.listening = False
                for flight in self.in_flight.values():
                    flight.gap = True
                if not self.serving:
                    await self.lose_all("the instance stopped")

    async def _on_message_guarded(self, message: ComfyMessage) -> None:
        """One message that cannot be handled ends its prompt's attempt, not the follower."""
        concerned = self.in_flight.get(message.prompt_id or "")
        with log_context(job_id=concerned.job.id if concerned is not None else None):
            try:
                await self._on_message(message)
            except Exception as exc:
                flight = self.in_flight.get(message.prompt_id or "")  # unless it left meanwhile
                log.exception("instance %s: handling %s failed", self.index, message.type)
                if flight is not None:
                    error = attempt_error(exc, **self._at(f"handling {message.type}"))
                    await self.fail_attempt(flight.prompt_id, error)
                    await self.stop_in_comfy(flight.job.id, flight.prompt_id)
                    self.fill_soon()

    async def _on_message(self, message: ComfyMessage) -> None:
        flight = self.in_flight.get(message.prompt_id or "")
        if flight is None:
            return
        flight.heard(message)
        data = message.data
        if message.type == "execution_start" and not flight.started:
            waited_s = flight.waited_s()
            if waited_s is not None:
                self.watch.phase("waiting", waited_s)
        if await self.progress.tell(flight, message):
            return
        if message.type in _ENDS:
            flight.finished = True
        if message.type == "execution_success":
            await self._finish_success(flight, comfy_ts=data.get("timestamp"))
        elif message.type == "execution_error":
            await self._finish(flight, node_error(data))
        elif message.type == "execution_interrupted":
            await self._finish_interrupted(flight, data)

    async def _finish_success(
        self, flight: _InFlight, *, comfy_ts: Any = None, entry: dict[str, Any] | None = None
    ) -> None:
        """Collect the outputs and complete the job. ComfyUI sends an `executed` message for
        every node with outputs, cached ones included, so when the socket never dropped during
        the prompt those messages are the whole result and /history is not asked."""
        try:
            if entry is None and not flight.gap:
                entry = {"outputs": flight.ui_outputs}
            elif entry is None:
                entry = await self.client.history_when_written(flight.prompt_id)
        except ComfyError as exc:
            await self._finish(flight, attempt_error(exc, **self._at("reading its history")))
            return
        outputs = outputs_from_history(flight.job.id, entry)
        self.leave(flight.prompt_id)
        if flight.job.models:  # a job without loaders leaves ComfyUI's loaded models as they were
            self.watch.model_loads(frozenset(flight.job.models) - self.loaded)
            self.loaded = frozenset(flight.job.models)
        details = {"instance": self.index, "comfy_ts": comfy_ts}
        await self.progress.flush()
        await self.endings.succeed(flight.job, outputs, details)
        self.completed += 1
        self.fill_soon()

    def _forward_preview(self, frame: PreviewFrame) -> None:
        """ComfyUI's legacy preview frames name no prompt: they belong to the one running."""
        if self.on_preview is None:
            return
        running = next((f for f in self.in_flight.values() if f.started), None)
        if running is not None:
            self.on_preview(running.job.id, frame.image_format, frame.data)

    def fill_soon(self) -> None:
        """A slot came free: take the next job at once rather than at the dispatcher's next
        round, in a task of its own. Not in the follower: submitting waits for ComfyUI's answer
        to POST /prompt, and a follower waiting on it reads nothing meanwhile, so the other job
        on the instance could finish unheard and its slot stay empty (a burst of short jobs ran
        at half the rate of ComfyUI fed directly)."""
        if self._fill_pending:  # one that has not started yet will see this slot too
            return
        self._fill_pending = True
        task = asyncio.create_task(self._fill_guarded())
        self.filling.add(task)
        task.add_done_callback(self.filling.discard)

    async def _fill_guarded(self) -> None:
        self._fill_pending = False
        try:
            await self.fill()
        except Exception:  # the dispatcher's loop tries again
            log.exception("refilling instance %s failed", self.index)
        self.wake.set()

    async def _finish_interrupted(self, flight: _InFlight, data: dict[str, Any]) -> None:
        message = f"interrupted at node {data.get('node_id')}"
        error = JobError("interrupted", message, retryable=True)
        await self._finish(
            flight, error if flight.stall is None else flight.stall.error(self.index, "interrupted")
        )

    async def _finish(self, flight: _InFlight, error: JobError) -> None:
        await self.fail_attempt(flight.prompt_id, error)
        if self.serving:
            self.fill_soon()

    # --- failures and reconciliation -------------------------------------------------------
    async def lose_all(self, reason: str) -> None:
        """The instance died or stopped answering: every job on it goes back to the queue."""
        for flight in list(self.in_flight.values()):
            message = f"instance {self.index}: {reason}"
            where = {"instance": self.index}
            with log_context(job_id=flight.job.id, instance=self.index):
                await self._finish(flight, JobError("instance_lost", message, True, where))

    async def reconcile(self) -> None:
        """After a WebSocket gap: ask /history about every in-flight prompt."""
        for flight in list(self.in_flight.values()):
            try:
                entry = await self.client.history(flight.prompt_id)
            except ComfyUnavailable:
                return
            status = ((entry or {}).get("status") or {}).get("status_str")
            flight.finished = status in ("success", "error")
            if status == "success":
                await self._finish_success(flight, entry=entry)
            elif status == "error":
                messages = (entry or {}).get("status", {}).get("messages", [])
                error: dict[str, Any] = next(
                    (m[1] for m in messages if m and m[0] == "execution_error"), {}
                )
                await self._finish(flight, node_error(error))

    async def stop_in_comfy(self, job_id: str, prompt_id: str) -> None:
        """Take a prompt out of ComfyUI's queue and interrupt it if it is the one running (a
        no-op otherwise), so an attempt that ended here does not go on there."""
        try:
            await self.client.cancel(prompt_id)
        except ComfyError as exc:
            log.warning("stopping job %s on instance %s: %s", job_id, self.index, exc)
