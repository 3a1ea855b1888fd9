"""The agent's side of instance control: the commands gateways leave in the store, carried out.

Gateways and agents talk only through the store, so a restart asked of any gateway is a row that
this agent takes (`Registry.take_commands`) every `poll_s` and hands to its supervisor. A stop
waits for the process to end (up to its grace period), so each command runs in a task of its
own and polling goes on meanwhile. `tail` commands ask for an instance's log lines for a while:
while one is in force the runner writes the log's last lines to the store whenever the file
changed, and writes nothing for logs nobody watches. In `serve` the gateway in the same process
wakes the runner at once (`wake`), so a button pressed there acts without waiting for the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.errors import ComfyfleetError
from comfyfleet.jobs import InstanceCommand, LogTail, Registry
from comfyfleet.supervise import tail_lines

log = logging.getLogger("comfyfleet.agent")

Control = Callable[[int, str], Awaitable[str]]
"""`Supervisor.control` (or a followed supervisor's): (instance, action) -> what was done."""


@dataclass
class CommandRunner:
    registry: Registry
    agent_id: str
    control: Control
    log_path: Callable[[int], Path]
    poll_s: float = 1.0
    lines: int = 200
    clock: Callable[[], float] = time.time
    _watching: dict[int, float] = field(default_factory=dict)
    """Instance -> until when someone wants its log lines."""
    _written: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Instance -> (size, mtime) of its log when its lines were last written."""
    _acting: set[asyncio.Task[None]] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _failing: bool = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Poll until cancelled; a store that cannot be reached is tried again next round."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self.run_once()
                    if self._failing:
                        log.warning("instance commands can be read again")
                    self._failing = False
                except ComfyfleetError as exc:
                    if not self._failing:
                        log.warning("reading instance commands failed: %s", exc)
                    self._failing = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
        finally:
            for task in list(self._acting):
                task.cancel()
            await asyncio.gather(*self._acting, return_exceptions=True)

    async def run_once(self) -> None:
        for command in await self.registry.take_commands(self.agent_id):
            if command.action == "tail":
                until = command.until or self.clock()
                self._watching[command.index] = max(until, self._watching.get(command.index, 0))
                self._written.pop(command.index, None)  # a new watcher gets the lines at once
            else:
                task = asyncio.create_task(self._act(command))
                self._acting.add(task)
                task.add_done_callback(self._acting.discard)
        await self._write_tails()

    async def settle(self) -> None:
        """Wait for the commands under way (tests)."""
        await asyncio.gather(*self._acting)

    async def _act(self, command: InstanceCommand) -> None:
        who = f" (asked by key {command.requested_by})" if command.requested_by else ""
        try:
            done = await self.control(command.index, command.action)
        except ComfyfleetError as exc:
            log.warning("%s of instance %s failed%s: %s", command.action, command.index, who, exc)
            return
        log.warning("%s%s", done, who)

    async def _write_tails(self) -> None:
        now = self.clock()
        for index, until in list(self._watching.items()):
            if until < now:
                del self._watching[index]
                self._written.pop(index, None)
                continue
            path = self.log_path(index)
            try:
                stat = path.stat()
                signature = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                signature = (-1, 0)  # no log yet: say so once, with no lines
            if self._written.get(index) == signature:
                continue
            found: list[str] = []
            if signature[0] >= 0:
                found = await asyncio.to_thread(tail_lines, path, self.lines)
            await self.registry.put_log_tail(LogTail(self.agent_id, index, tuple(found), now))
            self._written[index] = signature
