"""Following a supervisor that runs in another process (`up --detach`), through its control socket.

`serve` and `agent` in a workspace whose fleet `comfyfleet up --detach` already started do not
start instances of their own: they ask the running supervisor for its `status` every `poll_s`
and turn what changed into the same :class:`InstanceEvent`s a supervisor in the process sends,
so the dispatcher and the reporter cannot tell the difference. An instance whose process changed
between two polls (a restart) is reported stopped, then as it is now, so the jobs it held run
again. A supervisor that stops answering leaves every instance stopped until it answers again.
Following stops nothing: the fleet is `comfyfleet down`'s to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from comfyfleet.errors import NotRunningError, SupervisorError
from comfyfleet.supervise._control import ControlClient
from comfyfleet.supervise._states import SERVING, InstanceEvent, State
from comfyfleet.supervise._status import InstanceStatus

log = logging.getLogger("comfyfleet.supervise")

Listener = Callable[[InstanceEvent], None]


class FollowedSupervisor:
    """What a :class:`Supervisor` offers its listeners, for a supervisor in another process."""

    def __init__(self, client: ControlClient, *, poll_s: float = 0.5) -> None:
        self.client = client
        self.poll_s = poll_s
        self._listeners: list[Listener] = []
        self._statuses: dict[int, InstanceStatus] = {}
        self._lost = False

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def status(self) -> list[InstanceStatus]:
        return [self._statuses[index] for index in sorted(self._statuses)]

    async def recycle(self, index: int, reason: str) -> bool:
        """Ask the supervisor to restart the serving instance `index` (see
        :meth:`Supervisor.recycle`); False when it refuses or does not answer."""
        try:
            reply = await asyncio.to_thread(
                self.client.request, "recycle", timeout=5.0, instance=index, reason=reason
            )
        except (NotRunningError, SupervisorError, OSError, ValueError) as exc:
            log.warning("asking the supervisor to restart instance %s failed: %s", index, exc)
            return False
        return bool(reply.get("restarted"))

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> None:
        try:
            reply = await asyncio.to_thread(self.client.request, "status", timeout=5.0)
            statuses = [InstanceStatus.from_dict(each) for each in reply["instances"]]
        except (NotRunningError, SupervisorError, OSError, ValueError, KeyError) as exc:
            if not self._lost:
                log.warning("the supervisor at %s does not answer: %s", self.client.path, exc)
            self._lost = True
            gone = "the supervisor does not answer"
            statuses = [
                replace(s, state=State.STOPPED, reason=gone) for s in self._statuses.values()
            ]
        else:
            if self._lost:
                log.warning("the supervisor at %s answers again", self.client.path)
            self._lost = False
        self.apply(statuses)

    def apply(self, statuses: list[InstanceStatus]) -> None:
        """Take `statuses` as the fleet's, telling listeners what changed."""
        for now in statuses:
            before = self._statuses.get(now.index)
            self._statuses[now.index] = now
            if before is None:
                self._emit(now, State.STOPPED)
            elif before.state in SERVING and now.state in SERVING and before.pid != now.pid:
                self._emit(replace(before, state=State.STOPPED, reason="restarted"), before.state)
                self._emit(now, State.STOPPED)
            elif (before.state, before.port, before.url) != (now.state, now.port, now.url):
                self._emit(now, before.state)

    def _emit(self, status: InstanceStatus, old: State) -> None:
        event = InstanceEvent(
            status.index,
            old,
            status.state,
            reason=status.reason,
            pid=status.pid,
            port=status.port,
            url=status.url,
        )
        for listener in self._listeners:
            listener(event)
