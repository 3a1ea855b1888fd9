"""What a client watching a job sees: the store's events, translated once for SSE and WebSocket.

The store keeps what happened in the dispatcher's terms (ComfyUI's node ids, raw `ui` outputs,
progress as value/max). Clients want something smaller and steadier, so every store event becomes
zero or more client events here, in one place, whichever transport carries them:

    status     {"status", "attempt"?, "instance"?, "retry"?, "error"?}
    started    {"instance", "comfy_ts"}
    executing  {"node"}
    progress   {"node", "step", "steps", "value": 0..1}
    executed   {"node"}                    (a node finished; the files come as `output`)
    output     one per file or text of a succeeded job, just before its final status
    error      the error object of a failed job, just before its final status
    <other>    any kind this module does not know yet, passed through as stored

Each client event carries the job id and the seq of the store event it came from. When one store
event becomes several client events (outputs, then the final status), they share that seq and
only the last one `ends_group`: a stream that resumes after a seq never skips part of a group.
Each still has an id of its own (`seq:part` before the last, `seq` for the last), so an SSE
client resuming from one of them gets the rest of its group and nothing twice.

`JobFeed` follows one job: it replays the store's events after a seq, then waits for new ones,
merges preview frames in, and says when a heartbeat is due. It ends after the final status.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from comfyfleet.gateway._previews import PreviewFrame, PreviewHub, PreviewSubscription
from comfyfleet.jobs import TERMINAL, Job, JobEvent, JobProgress, JobStore

JobView = Callable[[Job], dict[str, Any] | Awaitable[dict[str, Any]]]
"""How a job looks in API answers (sync or async); its `outputs` carry the URLs."""

FINAL_STATUSES = frozenset(str(status) for status in TERMINAL)


@dataclass(frozen=True)
class ClientEvent:
    """One event as a client receives it."""

    job_id: str
    seq: int | None
    """The store event it came from; None for what the store never saw (preview frames)."""
    event: str
    data: dict[str, Any]
    ends_group: bool = True
    """False for the outputs and error sent before a final status that has the same seq."""
    part: int = 0
    """Place in its group, from 1, for the events before the one that ends it (0 for that one):
    with the seq, it gives every event an id of its own (`seq:part`)."""

    @property
    def event_id(self) -> str | None:
        """The SSE id: `seq` for the event that ends a group, `seq:part` for those before."""
        if self.seq is None:
            return None
        return str(self.seq) if self.ends_group else f"{self.seq}:{self.part}"

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "seq": self.seq, "event": self.event, "data": self.data}

    @property
    def final(self) -> bool:
        """The job's last event: nothing follows it."""
        return self.event == "status" and self.data.get("status") in FINAL_STATUSES


def is_final(event: JobEvent) -> bool:
    """Whether a store event is the job's final status."""
    return event.kind == "status" and event.data.get("status") in FINAL_STATUSES


def preview_event(frame: PreviewFrame) -> ClientEvent:
    data = {"format": frame.image_format, "base64": frame.base64}
    return ClientEvent(frame.job_id, None, "preview", data)


def translate(event: JobEvent, view: dict[str, Any] | None = None) -> list[ClientEvent]:
    """The client events of one store event. `view` is the job's API view: a final status needs
    it for the outputs (with their URLs) and the attempt count; without it none are listed."""
    if event.kind == "status":
        return _status(event, view)
    build = _TRANSLATIONS.get(event.kind)
    data = dict(event.data) if build is None else build(event.data)
    return [ClientEvent(event.job_id, event.seq, event.kind, data)]


def _status(event: JobEvent, view: dict[str, Any] | None) -> list[ClientEvent]:
    data = event.data
    status = str(data.get("status"))
    out: dict[str, Any] = {"status": status}
    attempt = data.get("attempt")
    if attempt is None and view is not None and status in FINAL_STATUSES:
        attempt = view.get("attempts")
    for key, value in (("attempt", attempt), ("instance", data.get("instance"))):
        if value is not None:
            out[key] = value
    if data.get("retry"):
        out["retry"] = True
    error = data.get("error")
    if error is None and status == "failed" and view is not None:
        error = view.get("error")
    if error is not None:
        out["error"] = error
    group: list[ClientEvent] = []
    if status == "succeeded" and view is not None:
        outputs = view.get("outputs") or []
        for index, output in enumerate(outputs):
            item = {**output, "index": index, "count": len(outputs)}
            part = len(group) + 1
            group.append(ClientEvent(event.job_id, event.seq, "output", item, False, part))
    if status == "failed" and error is not None:
        part = len(group) + 1
        group.append(ClientEvent(event.job_id, event.seq, "error", error, False, part))
    group.append(ClientEvent(event.job_id, event.seq, "status", out))
    return group


_TRANSLATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "progress": lambda data: JobProgress.from_json(data).to_client(),
    "executing": lambda data: {"node": data.get("node")},
    "executed": lambda data: {"node": data.get("node")},
    "started": lambda data: {"instance": data.get("instance"), "comfy_ts": data.get("comfy_ts")},
    "cancel_requested": lambda data: {},
}


class JobFeed:
    """Follows one job's events from `after` on, as batches of client events:

        async with JobFeed(store, job_id, view=view, after=seq) as feed:
            async for batch in feed:
                ...   # an empty batch: nothing happened for `heartbeat_s`

    Preview frames of `previews` (when given) are merged in while the job runs. Iteration ends
    after the job's final status (at once for a finished job with nothing after `after`), or
    when `closing` is set. Leaving the `async with` cancels and awaits every task it started.

    `poll_s` bounds how long one wait on the store lasts: events another process writes to a
    shared store show within it (this process's own events wake the feed at once).
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        *,
        view: JobView,
        after: int = 0,
        previews: PreviewHub | None = None,
        heartbeat_s: float = 15.0,
        poll_s: float = 1.0,
        closing: asyncio.Event | None = None,
    ) -> None:
        self.job_id = job_id
        self.after = after
        """The seq of the last store event handed out (whole groups only)."""
        self._store = store
        self._view = view
        self._heartbeat_s = heartbeat_s
        self._poll_s = min(poll_s, heartbeat_s)
        self._closing = closing
        self._subscription: PreviewSubscription | None = (
            previews.subscribe(job_id) if previews is not None else None
        )
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._known_final = False  # the job was finished when last looked at
        self._ended = False
        self._last_sent = 0.0
        self._next_look = 0.0  # when an idle feed next reads the job itself

    async def __aenter__(self) -> JobFeed:
        job = await self._store.get(self.job_id)
        self._known_final = job.terminal
        if self._subscription is not None:
            await self._subscription.__aenter__()
        self._last_sent = self._next_look = asyncio.get_running_loop().time()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        try:  # the subscription first: it ends even if the wait below is cancelled again
            if self._subscription is not None:
                await self._subscription.__aexit__(exc_type, exc, tb)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __aiter__(self) -> JobFeed:
        return self

    async def __anext__(self) -> list[ClientEvent]:
        loop = asyncio.get_running_loop()
        while not self._ended:
            self._arm()
            wait_s = max(0.0, self._last_sent + self._heartbeat_s - loop.time())
            done, _ = await asyncio.wait(
                self._tasks.values(), timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
            batch = self._collect(done)
            if batch or not done:
                self._last_sent = loop.time()
                return batch  # events, or an empty batch: a heartbeat is due
        raise StopAsyncIteration

    def _arm(self) -> None:
        """Start whichever waits are not running: the store, the previews, the closing flag."""
        if "store" not in self._tasks:
            self._tasks["store"] = asyncio.create_task(self._next_from_store())
        if self._subscription is not None and "preview" not in self._tasks:
            self._tasks["preview"] = asyncio.create_task(self._subscription.get())
        if self._closing is not None and "closing" not in self._tasks:
            self._tasks["closing"] = asyncio.create_task(self._closing.wait())

    def _collect(self, done: set[asyncio.Task[Any]]) -> list[ClientEvent]:
        finished = {name: task for name, task in self._tasks.items() if task in done}
        for name in finished:
            del self._tasks[name]
        if "closing" in finished:
            self._ended = True
        batch: list[ClientEvent] = []
        if "store" in finished:
            batch.extend(finished["store"].result())
        if "preview" in finished and not self._ended:
            batch.append(preview_event(finished["preview"].result()))
        return batch

    async def _next_from_store(self) -> list[ClientEvent]:
        """The next events, translated; empty when `poll_s` passed without any."""
        store = self._store
        if self._known_final:
            events = await store.events(self.job_id, after=self.after)
        else:
            events = await store.wait_events(self.job_id, after=self.after, timeout=self._poll_s)
        if not events:
            if self._known_final:
                self._ended = True  # finished, and everything after `after` was handed out
            elif (now := asyncio.get_running_loop().time()) >= self._next_look:
                # A resume point past the job's own events never shows its end: look at the job
                # now and then (once a heartbeat: a job read costs more than an event query).
                self._next_look = now + self._heartbeat_s
                self._known_final = (await store.get(self.job_id)).terminal
            return []
        batch: list[ClientEvent] = []
        for event in events:
            view = await self._job_view() if is_final(event) else None
            batch.extend(translate(event, view))
            self.after = event.seq
            if is_final(event):
                self._ended = True
                break
        return batch

    async def _job_view(self) -> dict[str, Any]:
        view = self._view(await self._store.get(self.job_id))
        return await view if inspect.isawaitable(view) else view
