"""Live job progress: `GET /v1/jobs/{id}/events` (Server-Sent Events) and `WS /v1/ws`.

Both carry the client events of `_live` (one translation), as one JSON shape:
`{"job_id", "seq", "event", "data"}`. Both replay the store's events after a seq, then follow
live, so a client that drops resumes where it stopped and loses nothing but preview frames.

SSE goes through `EventStreamResponse`, a small ASGI response of our own rather than starlette's
`StreamingResponse`: that one only watches for the client going away on servers that speak ASGI
spec < 2.4; on newer ones it learns of a disconnect at its next write, which for an idle job is
the next heartbeat, up to `heartbeat_s` later. Ours always listens for `http.disconnect` beside
the stream and closes the event generator at once, in the task that runs it, so no wait on the
store or on previews outlives the connection.

A finished job resumed after its last event answers `204 No Content`: the standard way to tell a
browser's `EventSource` to stop reconnecting. Setting `closing` (the gateway is shutting down)
ends every stream and closes every socket (1012), so a server's graceful shutdown does not wait
on jobs that run for minutes; clients resume elsewhere with `Last-Event-ID` or `after`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from comfyfleet.auth import READ
from comfyfleet.errors import ComfyfleetError
from comfyfleet.gateway._body import JsonLimits, parse_json, safe_text
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._live import ClientEvent, JobFeed, JobView
from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.gateway._sse import EventStreamResponse
from comfyfleet.gateway._stream_slots import StreamSlots
from comfyfleet.gateway._tenancy import Caller, needs, socket_caller, visible_job
from comfyfleet.jobs import Job, JobNotFound, JobStore, JobStoreError

log = logging.getLogger("comfyfleet.gateway")

MAX_SEQ = 2**63 - 1
"""The largest event seq a store can hold (a signed 64-bit integer): resume points above it
are refused rather than overflowing a query."""
COMMAND_LIMITS = JsonLimits(max_bytes=64 * 1024, max_depth=8, max_items=1000)
"""A WebSocket command is a small flat object; anything much larger is not one."""
HEARTBEAT = b": keep-alive\n\n"


def sse_message(event: ClientEvent) -> bytes:
    """One SSE message, with its own id (`seq`, or `seq:part` inside a group; see `_live`)."""
    event_id = event.event_id
    lines = [] if event_id is None else [f"id: {event_id}"]
    name = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in event.event)
    lines.append(f"event: {name}")
    lines.append("data: " + json.dumps(event.to_dict(), separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def _sse_body(feed: JobFeed, resume: _Resume) -> AsyncGenerator[bytes, None]:
    try:
        async with feed:
            async for batch in feed:
                kept = [e for e in batch if not resume.already_sent(e)]
                if batch and not kept:
                    continue
                yield b"".join(sse_message(event) for event in kept) if kept else HEARTBEAT
    except JobStoreError as exc:  # the store closed or lost the job: the client may resume
        log.warning("event stream of job %s ended: %s", feed.job_id, exc)


@dataclass(frozen=True)
class _Resume:
    """Where a stream starts: after store event `after`, less the first `skip` events of the
    group of store event `after + 1` when the client had part of that group already."""

    after: int
    skip: int = 0
    seq: int | None = None

    def already_sent(self, event: ClientEvent) -> bool:
        return event.seq == self.seq and 0 < event.part <= self.skip


def _resume_point(last_event_id: str | None, after: int | None) -> _Resume:
    """After `Last-Event-ID` (a browser resuming: `seq` or `seq:part`), else `?after=`."""
    if last_event_id is None or not last_event_id.strip():
        return _Resume(after or 0)
    seq_text, colon, part_text = last_event_id.strip().partition(":")
    part_ok = not colon or (_is_seq(part_text) and int(part_text) > 0)
    if not (_is_seq(seq_text) and part_ok):
        shown = safe_text(last_event_id)
        raise ApiError(
            400,
            "invalid_event_id",
            f"Last-Event-ID must be the id of an event this API sent, not '{shown}'",
            {"last_event_id": shown},
        )
    seq = int(seq_text)
    if not colon or seq == 0:
        return _Resume(seq)
    return _Resume(seq - 1, skip=int(part_text), seq=seq)


def _is_seq(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_SEQ


@dataclass(frozen=True)
class _Live:
    """What both transports need, from `events_router`'s arguments."""

    store: JobStore
    view: JobView
    previews: PreviewHub
    heartbeat_s: float
    poll_s: float
    closing: asyncio.Event | None
    max_subscriptions: int

    def feed(self, job_id: str, after: int, previews: bool) -> JobFeed:
        return JobFeed(
            self.store,
            job_id,
            view=self.view,
            after=after,
            previews=self.previews if previews else None,
            heartbeat_s=self.heartbeat_s,
            poll_s=self.poll_s,
            closing=self.closing,
        )


def events_router(
    store: JobStore,
    view: JobView,
    previews: PreviewHub,
    *,
    heartbeat_s: float = 15.0,
    poll_s: float = 1.0,
    closing: asyncio.Event | None = None,
    max_subscriptions: int = 100,
    streams: StreamSlots | None = None,
) -> APIRouter:
    """The live routes over `store`. `view` builds a job's API view (its outputs' URLs go into
    `output` events); `previews` is the hub the dispatcher publishes preview frames to.

    `heartbeat_s`: SSE keep-alive comments and WebSocket pings when idle. `poll_s`: how soon
    events written by another process to a shared store show up. `closing`: set it when the
    server starts shutting down to end every stream. `max_subscriptions`: jobs per socket.
    `streams`: the bound on open SSE streams (none: unbounded, as in unit tests of one route)."""
    live = _Live(store, view, previews, heartbeat_s, poll_s, closing, max_subscriptions)
    router = APIRouter(tags=["events"])

    async def find(job_id: str, caller: Caller) -> Job:
        try:
            return await visible_job(store, job_id, caller)
        except JobNotFound as exc:
            raise ApiError(404, "job_not_found", f"no job '{job_id}'", {"id": job_id}) from exc

    @router.get(
        "/v1/jobs/{job_id}/events",
        summary="Follow a job live (Server-Sent Events), from the start or a Last-Event-ID",
        response_class=EventStreamResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The job's events"},
            204: {"description": "The job finished and every event was already sent"},
            404: {"description": "No such job"},
        },
    )
    async def job_events(
        job_id: str,
        caller: Annotated[Caller, Depends(needs(READ))],
        after: Annotated[
            int | None, Query(ge=0, le=MAX_SEQ, description="Replay the events after")
        ] = None,
        previews: Annotated[bool, Query(description="Add `preview` frames")] = False,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        start = _resume_point(last_event_id, after)
        job = await find(job_id, caller)
        if job.terminal and not await store.events(job_id, after=start.after, limit=1):
            return Response(status_code=204)
        slot = streams.take(caller.owner) if streams is not None else None
        return EventStreamResponse(
            _sse_body(live.feed(job_id, start.after, previews), start),
            on_close=None if slot is None else slot.release,
        )

    @router.websocket("/v1/ws")
    async def socket(websocket: WebSocket) -> None:
        caller = await socket_caller(websocket, READ)
        if caller is not None:
            await _Socket(websocket, live, caller).serve()

    return router


# --- WebSocket --------------------------------------------------------------------------------


class CommandError(ComfyfleetError):
    """A WebSocket command the server cannot follow; answered with an `error` event."""

    def __init__(self, code: str, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id


def _parse(message: Mapping[str, Any]) -> dict[str, Any]:
    text = message.get("text")
    if text is None:
        raise CommandError("invalid_command", "commands are JSON text messages, not binary")
    try:
        command = parse_json(text.encode("utf-8", "surrogatepass"), COMMAND_LIMITS)
    except ApiError as exc:
        raise CommandError(exc.code, exc.message) from exc
    if not isinstance(command, dict) or not isinstance(command.get("op"), str):
        raise CommandError(
            "invalid_command", 'a command is a JSON object with an "op": subscribe or unsubscribe'
        )
    return command


def _job_id(command: dict[str, Any]) -> str:
    job_id = command.get("job_id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > 256:
        op = safe_text(command["op"], 40)
        raise CommandError("invalid_command", f'"{op}" needs a "job_id" (a string)')
    return job_id


def _subscribe_args(command: dict[str, Any], job_id: str) -> tuple[int, bool]:
    after, previews = command.get("after", 0), command.get("previews", False)
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_SEQ:
        message = f'"after" must be the seq of an event (an integer from 0 to {MAX_SEQ})'
        raise CommandError("invalid_command", message, job_id=job_id)
    if not isinstance(previews, bool):
        raise CommandError("invalid_command", '"previews" must be true or false', job_id=job_id)
    return after, previews


def _envelope(event: str, data: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
    return {"job_id": job_id, "seq": None, "event": event, "data": data}


class _Socket:
    """One client socket: any number of followed jobs, one task each, all ended with it."""

    def __init__(self, websocket: WebSocket, live: _Live, caller: Caller) -> None:
        self.websocket = websocket
        self.live = live
        self.caller = caller
        self.follows: dict[str, asyncio.Task[None]] = {}
        self.open = True
        self._sending = asyncio.Lock()

    async def serve(self) -> None:
        await self.websocket.accept()
        keepalive = asyncio.create_task(self._keepalive())
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._command(message)
        finally:
            self.open = False
            tasks = [keepalive, *self.follows.values()]
            self.follows.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _command(self, message: Mapping[str, Any]) -> None:
        try:
            command = _parse(message)
            op = command["op"]
            if op == "subscribe":
                await self._subscribe(command)
            elif op == "unsubscribe":
                job_id = _job_id(command)
                await self._stop(job_id)
                await self._send(_envelope("unsubscribed", {}, job_id))
            elif op == "ping":
                await self._send(_envelope("pong", {}))
            else:
                hint = f"unknown op '{safe_text(op, 40)}': use subscribe, unsubscribe or ping"
                raise CommandError("unknown_op", hint)
        except CommandError as exc:
            error = {"code": exc.code, "message": exc.message}
            await self._send(_envelope("error", error, exc.job_id))

    async def _subscribe(self, command: dict[str, Any]) -> None:
        job_id = _job_id(command)
        after, previews = _subscribe_args(command, job_id)
        try:
            await visible_job(self.live.store, job_id, self.caller)
        except JobNotFound as exc:
            raise CommandError("job_not_found", f"no job '{job_id}'", job_id=job_id) from exc
        if job_id not in self.follows and len(self.follows) >= self.live.max_subscriptions:
            limit = self.live.max_subscriptions
            message = f"this socket follows {limit} jobs already: unsubscribe from one first"
            raise CommandError("too_many_subscriptions", message, job_id=job_id)
        await self._stop(job_id)  # subscribing again restarts from the new `after`
        await self._send(_envelope("subscribed", {"after": after, "previews": previews}, job_id))
        self.follows[job_id] = asyncio.create_task(self._follow(job_id, after, previews))

    async def _stop(self, job_id: str) -> None:
        task = self.follows.pop(job_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _follow(self, job_id: str, after: int, previews: bool) -> None:
        try:
            async with self.live.feed(job_id, after, previews) as feed:
                async for batch in feed:
                    for event in batch:  # an empty batch is the feed's heartbeat: not needed here
                        await self._send(event.to_dict())
        except JobStoreError as exc:
            error = {"code": "stream_failed", "message": exc.message}
            await self._send(_envelope("error", error, job_id))
        finally:
            if self.follows.get(job_id) is asyncio.current_task():
                del self.follows[job_id]

    async def _keepalive(self) -> None:
        """A `ping` event when the heartbeat is due; close (1012) when the server shuts down."""
        closing = self.live.closing or asyncio.Event()
        while self.open:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.live.heartbeat_s):
                    await closing.wait()
            if closing.is_set():
                async with self._sending:
                    self.open = False
                    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                        await self.websocket.close(1012, "the server is shutting down")
                return
            await self._send(_envelope("ping", {}))

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._sending:
            if not self.open:
                return
            try:
                await self.websocket.send_text(json.dumps(message, separators=(",", ":")))
            except (WebSocketDisconnect, OSError):
                self.open = False  # the reader sees the disconnect and ends everything
