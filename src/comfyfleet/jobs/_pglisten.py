"""The PostgreSQL store's ear: LISTEN on one connection, and wake whoever waits in this process.

Triggers send `comfyfleet_events` whenever a job gets an event ('s' for a status event, else 'e',
then the job id: migration 0008),
and `comfyfleet_queued` whenever a job becomes claimable, from any process that writes to the
database. Event streams (`wait_events`) and dispatchers wake on them instead of polling, which is
what makes a job enqueued through a gateway on one machine start at once on another.

PostgreSQL keeps no notification for a session that is not connected, so after the connection
is lost (it reconnects with a growing delay) every waiter and every dispatcher is woken once:
each re-reads what it was waiting for, so nothing sent meanwhile stays unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from comfyfleet.db import Connection, connect, one_line, redact
from comfyfleet.jobs._model import JobStoreError

log = logging.getLogger("comfyfleet.jobs")

EVENTS = "comfyfleet_events"
QUEUED = "comfyfleet_queued"
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


class Listener:
    """Runs from :meth:`start` until :meth:`close`. `on_event(job_id, kind)` (kind "status", or
    "event" for any other) and `on_queued()` are called on the event loop; `on_lost()` after a
    reconnection (notifications may be missing)."""

    def __init__(
        self,
        url: str,
        *,
        on_event: Callable[[str, str | None], None],
        on_queued: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._url = url
        self._on_event = on_event
        self._on_queued = on_queued
        self._on_lost = on_lost
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while LISTEN is in effect (tests wait for it after killing the connection)."""

    async def start(self, conn: Connection) -> None:
        """Listen on `conn` (open, autocommit) and keep listening, reconnecting as needed."""
        await self._listen_on(conn)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop()

    async def _listen_on(self, conn: Connection) -> None:
        self._conn = conn
        await conn.execute(f"LISTEN {EVENTS}")
        await conn.execute(f"LISTEN {QUEUED}")
        self.listening.set()

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await self._receive()
            except psycopg.Error as exc:
                log.warning("lost the job store's notifications (%s); reconnecting", one_line(exc))
            self.listening.clear()
            await self._drop()
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._listen_on(await connect(self._url, JobStoreError, "job store"))
                except (JobStoreError, psycopg.Error) as exc:
                    delay = min(delay * 2, RETRY_MAX_S)
                    log.warning("%s: %s", redact(self._url), exc)
                    await self._drop()
                    continue
                delay = RETRY_FIRST_S
                self._on_lost()
                break

    async def _receive(self) -> None:
        assert self._conn is not None
        async for note in self._conn.notifies():
            if note.channel == EVENTS:
                flag, job_id = note.payload[:1], note.payload[1:]
                self._on_event(job_id, "status" if flag == "s" else "event")
            else:
                self._on_queued()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
