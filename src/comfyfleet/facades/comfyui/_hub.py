"""The ComfyUI WebSocket for the whole fleet: one feed of the store's events per gateway process,
fanned out to the sockets of the clients whose prompts they concern.

Why one feed: a ComfyUI client opens one socket (`/ws?clientId=C`) and expects the messages of
every prompt it submitted with `client_id: C`, whichever instance runs it and whichever gateway
replica took it. Following the store's whole event log once (`wait_events_since`) serves any
number of sockets with one wait, and it sees prompts taken by other replicas.

Who hears what: a prompt's messages go to the sockets whose id is the prompt's `client_id` (as
ComfyUI does), and a job that came without one (through `/v1`, say) goes to every socket, as
ComfyUI broadcasts such prompts; in both cases only sockets whose key may see the job (its owner,
or an admin key; everyone when keys are off). Queue changes reach every socket as `status`.

Bounded: each socket has an outbox of `max_buffer` messages. A client that stops reading fills
it and is then disconnected; nobody else waits for it. Preview frames are dropped, never queued
past half the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.facades.comfyui._messages import (
    PromptMessages,
    preview_frame,
    status_message,
    text,
)
from comfyfleet.facades.comfyui._shapes import client_id_of, end_messages
from comfyfleet.gateway import Caller, PreviewHub
from comfyfleet.jobs import TERMINAL, Job, JobEvent, JobNotFound, JobStatus, JobStore

log = logging.getLogger("comfyfleet.gateway")

_KNOWN_JOBS = 10_000
"""How many jobs' (client id, owner) are remembered: enough for every job running at once."""
_FINAL = frozenset(str(status) for status in TERMINAL)


@dataclass(eq=False)
class Listener:
    """One open socket: its id, its key, and the messages waiting to be written to it."""

    sid: str
    caller: Caller
    outbox: asyncio.Queue[str | bytes]
    metadata_previews: bool = False
    """The client said it reads preview frames with metadata (`feature_flags`)."""
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the outbox overflowed: the socket is to be closed."""

    def offer(self, message: str | bytes) -> None:
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped.set()

    def offer_preview(self, frame: bytes) -> None:
        if self.outbox.qsize() < self.outbox.maxsize // 2:
            self.outbox.put_nowait(frame)


@dataclass
class _Prompt:
    client_id: str | None
    owner: str | None
    messages: PromptMessages
    previews: asyncio.Task[None] | None = None


class SocketHub:
    """Follows the store and feeds the listeners. `start` once, `stop` at shutdown."""

    def __init__(
        self,
        store: JobStore,
        previews: PreviewHub,
        *,
        max_buffer: int = 1000,
        poll_s: float = 1.0,
    ) -> None:
        self.store = store
        self.previews = previews
        self.max_buffer = max_buffer
        self.poll_s = poll_s
        self._listeners: dict[str, set[Listener]] = {}
        self._prompts: OrderedDict[str, _Prompt] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._joined = asyncio.Event()

    # --- sockets ----------------------------------------------------------------------------

    def connect(self, sid: str, caller: Caller) -> Listener:
        listener = Listener(sid, caller, asyncio.Queue(self.max_buffer))
        self._listeners.setdefault(sid, set()).add(listener)
        self._joined.set()
        return listener

    def disconnect(self, listener: Listener) -> None:
        group = self._listeners.get(listener.sid)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.sid]

    async def queue_remaining(self) -> int:
        """Prompts queued or running on the whole fleet (ComfyUI's `queue_remaining`)."""
        queued = await self.store.count(JobStatus.QUEUED)
        return queued + await self.store.count(JobStatus.RUNNING)

    def expect(self, job: Job) -> None:
        """A prompt taken by this process: remember whom it belongs to without a store read."""
        self._remember(job.id, client_id_of(job), job.owner)

    # --- the feed ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow())
        await self._ready.wait()

    async def stop(self) -> None:
        tasks = [p.previews for p in self._prompts.values() if p.previews is not None]
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self) -> None:
        after = await self.store.latest_event_seq()
        self._ready.set()
        while True:
            try:
                if not self._listeners:
                    # Nobody to tell: no event is read (each job's would be, decoded, at every
                    # commit), only where the log ends, until a socket joins; what comes after
                    # that point is then read as usual.
                    self._joined.clear()
                    after = await self.store.latest_event_seq()
                    if not self._listeners:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self.poll_s):
                                await self._joined.wait()
                    continue
                events = await self.store.wait_events_since(after, timeout=self.poll_s)
            except Exception as exc:  # the store is away: sockets stay open, the feed waits
                log.warning("the ComfyUI socket feed cannot read the store: %s", exc)
                await asyncio.sleep(self.poll_s)
                continue
            if not events:
                continue
            after = events[-1].seq
            if not self._listeners:
                continue
            queue_changed = False
            for event in events:
                queue_changed |= event.kind == "status"
                try:
                    await self._route(event)
                except JobNotFound:
                    continue
                await asyncio.sleep(0)  # the sockets' writers drain between events
            if queue_changed:
                self._broadcast(status_message(await self.queue_remaining()))

    async def _route(self, event: JobEvent) -> None:
        prompt = self._prompts.get(event.job_id)
        if prompt is None:
            job = await self.store.get(event.job_id)
            prompt = self._remember(job.id, client_id_of(job), job.owner)
        final = event.kind == "status" and event.data.get("status") in _FINAL
        listeners = self._audience(prompt)
        if final:
            self._forget(event.job_id)
            if listeners:
                job = await self.store.get(event.job_id)
                for kind, data in end_messages(job):
                    self._send(listeners, text(kind, data))
            return
        if not listeners:
            return
        if event.kind == "started" and prompt.previews is None:
            prompt.previews = asyncio.create_task(self._forward_previews(event.job_id, prompt))
        for kind, data in prompt.messages.translate(event):
            self._send(listeners, text(kind, data))

    def _audience(self, prompt: _Prompt) -> list[Listener]:
        if prompt.client_id is not None:
            candidates = self._listeners.get(prompt.client_id, set())
        else:
            candidates = {each for group in self._listeners.values() for each in group}
        return [each for each in candidates if each.caller.can_see(prompt.owner)]

    def _send(self, listeners: list[Listener], message: str) -> None:
        for listener in listeners:
            listener.offer(message)

    def _broadcast(self, message: str) -> None:
        for group in self._listeners.values():
            for listener in group:
                listener.offer(message)

    async def _forward_previews(self, job_id: str, prompt: _Prompt) -> None:
        """The job's preview frames, while it runs, to whoever listens for it then."""
        with contextlib.suppress(Exception):
            async with self.previews.subscribe(job_id) as frames:
                async for frame in frames:
                    for listener in self._audience(prompt):
                        data = preview_frame(
                            frame.image_format,
                            frame.data,
                            prompt_id=job_id,
                            node=prompt.messages.node,
                            metadata=listener.metadata_previews,
                        )
                        if data is not None:
                            listener.offer_preview(data)

    def _remember(self, job_id: str, client_id: str | None, owner: str | None) -> _Prompt:
        prompt = self._prompts.get(job_id)
        if prompt is None:
            prompt = _Prompt(client_id, owner, PromptMessages(job_id))
            self._prompts[job_id] = prompt
            while len(self._prompts) > _KNOWN_JOBS:
                _, old = self._prompts.popitem(last=False)
                if old.previews is not None:
                    old.previews.cancel()
        return prompt

    def _forget(self, job_id: str) -> None:
        prompt = self._prompts.pop(job_id, None)
        if prompt is not None and prompt.previews is not None:
            prompt.previews.cancel()


Writer = Callable[[str | bytes], Awaitable[None]]


async def drain(listener: Listener, write: Writer) -> None:
    """Write the listener's outbox to its socket until the outbox overflows (then return, so the
    caller closes the socket) or the task is cancelled."""
    while not listener.dropped.is_set():
        getting = asyncio.ensure_future(listener.outbox.get())
        dropping = asyncio.ensure_future(listener.dropped.wait())
        done, _ = await asyncio.wait((getting, dropping), return_when=asyncio.FIRST_COMPLETED)
        dropping.cancel()
        if getting not in done:
            getting.cancel()
            return
        await write(getting.result())


def feature_flags(message: Any) -> dict[str, Any] | None:
    """The flags a client announces (`{"type": "feature_flags", "data": {...}}`), if that is
    what `message` is."""
    if isinstance(message, dict) and message.get("type") == "feature_flags":
        data = message.get("data")
        return data if isinstance(data, dict) else {}
    return None
