"""Instance control and logs: `POST /v1/instances/{ref}/restart|stop|start` and
`GET /v1/instances/{ref}/logs`.

A gateway runs no instance, so it acts through the store like everything else: it leaves a
command for the agent that runs the instance (`Registry.send_command`), which that agent takes
within a second and carries out (in `serve` the agent in the same process is woken at once).
The answer is `202`: the command is on its way, and the instance's state in `/v1/instances`
says how it goes. Logs work the same way: reading them asks the agent to write the instance's
last lines to the store for the next `TAIL_S` seconds, and answers with what it wrote last.

`ref` names an instance as the proxies do: its index, or `agent:index` where several agents have
one of that index. What cannot work is refused before anything is sent: an instance nobody
has (404), an ambiguous index or a gone agent (409), an attached server, which comfyfleet does
not run (409). Admin keys only: these act on the fleet and show what instances print.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from comfyfleet.auth import ADMIN
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._tenancy import Caller, needs
from comfyfleet.jobs import Fleet, InstanceCommand, InstanceRecord

TAIL_S = 30.0
"""How long one read of an instance's log keeps its agent writing the lines."""
_RESEND_S = 5.0
"""A tail is asked for again at most this often per instance by one gateway (a dashboard polls
every second or two; one command row per poll would be waste)."""
_FIRST_LINES_S = 2.0
"""How long a first read waits for the agent to write lines it has not written yet."""


def instance_name(record: InstanceRecord) -> str:
    return f"{record.agent}:{record.index}"


def find_instance(fleet: Fleet, ref: str) -> InstanceRecord:
    """The instance `ref` names, or the 404 / 409 that says why there is none."""
    found = fleet.find(ref)
    if not found:
        known = [instance_name(i) for i in fleet.instances]
        raise ApiError(
            404, "instance_not_found", f"no instance '{ref}' in the fleet", {"known": known}
        )
    if len(found) > 1:
        raise ApiError(
            409,
            "instance_ambiguous",
            f"several agents have an instance {ref}: name one as agent:index",
            {"candidates": [instance_name(i) for i in found]},
        )
    record = found[0]
    if record.agent not in fleet.alive:
        raise ApiError(
            409,
            "agent_gone",
            f"the agent of instance {instance_name(record)} is gone: nothing runs it now",
            {"instance": instance_name(record), "agent": record.agent},
        )
    return record


def _not_attached(record: InstanceRecord, what: str) -> None:
    if record.details.get("attached"):
        raise ApiError(
            409,
            "instance_attached",
            f"instance {instance_name(record)} is an attached server: comfyfleet does not "
            f"run it, so its {what} is where it runs",
            {"instance": instance_name(record), "url": record.base_url},
        )


def control_router(
    service: Service,
    *,
    wake: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The routes; `wake` tells an agent in this process that a command is waiting."""
    router = APIRouter(tags=["fleet"])
    registry = service.registry
    asked: dict[tuple[str, int], float] = {}

    async def send(record: InstanceRecord, action: str, caller: Caller, **extra: Any) -> str:
        command = InstanceCommand(
            id=uuid.uuid4().hex,
            agent=record.agent,
            index=record.index,
            action=action,
            requested_at=clock(),
            requested_by=caller.owner,
            **extra,
        )
        await registry.send_command(command)
        wake()
        return command.id

    async def act(ref: str, action: str, caller: Caller) -> dict[str, Any]:
        record = find_instance(await service.fleet(), ref)
        what = {"restart": "restart", "stop": "process", "start": "process"}[action]
        _not_attached(record, what)
        command = await send(record, action, caller)
        return {
            "instance": instance_name(record),
            "action": action,
            "command": command,
            "state": record.state,
        }

    def control_route(action: str, summary: str) -> None:
        async def control(
            ref: str, caller: Annotated[Caller, Depends(needs(ADMIN))]
        ) -> dict[str, Any]:
            return await act(ref, action, caller)

        control.__doc__ = (
            f"202: the agent running the instance was asked to {action} it (within a second); "
            "its state in `/v1/instances` follows."
        )
        router.add_api_route(
            f"/v1/instances/{{ref}}/{action}",
            control,
            methods=["POST"],
            status_code=202,
            summary=summary,
            name=f"instance_{action}",
        )

    control_route("restart", "Restart an instance (a failed one retries at once)")
    control_route("stop", "Stop an instance (it stays stopped until started)")
    control_route("start", "Start a stopped instance")

    @router.get("/v1/instances/{ref}/logs", summary="An instance's last log lines")
    async def logs(
        ref: str,
        caller: Annotated[Caller, Depends(needs(ADMIN))],
        lines: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """The last `lines` lines its agent wrote; asking keeps the agent writing them for
        30 s more, so a page that polls this sees the log live."""
        record = find_instance(await service.fleet(), ref)
        _not_attached(record, "log")
        key = (record.agent, record.index)
        now = clock()
        if now - asked.get(key, 0.0) >= _RESEND_S:
            await send(record, "tail", caller, until=now + TAIL_S)
            asked[key] = now
        tail = await registry.log_tail(*key)
        deadline = time.monotonic() + _FIRST_LINES_S
        while (tail is None or tail.updated_at < now - TAIL_S) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the first read: the agent writes within its poll
            tail = await registry.log_tail(*key)
        shown = [] if tail is None else list(tail.lines[-lines:])
        return {
            "instance": instance_name(record),
            "lines": shown,
            "updated_at": None if tail is None else tail.updated_at,
        }

    return router
