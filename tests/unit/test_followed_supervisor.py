"""Following a detached supervisor: what changed between two `status` answers becomes the
events a supervisor in the process would have sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from comfyfleet.supervise import ControlClient, FollowedSupervisor, InstanceEvent, InstanceStatus
from comfyfleet.supervise import State as S


def _status(state: S, pid: int | None = 10, port: int = 8188) -> InstanceStatus:
    return InstanceStatus(0, state, pid, port, "cpu", None, None, 0, None, None, "")


def _followed(tmp_path: Path) -> tuple[FollowedSupervisor, list[tuple[S, S, int | None]]]:
    seen: list[tuple[S, S, int | None]] = []
    followed = FollowedSupervisor(ControlClient(tmp_path / "supervisor.sock"))

    def note(event: InstanceEvent) -> None:
        seen.append((event.old, event.new, event.port))

    followed.add_listener(note)
    return followed, seen


def test_changes_become_events_and_a_restart_between_polls_is_seen(tmp_path: Path) -> None:
    followed, seen = _followed(tmp_path)
    followed.apply([_status(S.STARTING, None)])
    followed.apply([_status(S.READY)])
    followed.apply([_status(S.READY)])  # nothing changed, nothing said
    followed.apply([_status(S.BUSY, pid=11)])  # a new process: the old one's jobs are lost
    assert seen == [
        (S.STOPPED, S.STARTING, 8188),
        (S.STARTING, S.READY, 8188),
        (S.READY, S.STOPPED, 8188),
        (S.STOPPED, S.BUSY, 8188),
    ]
    assert [s.pid for s in followed.status()] == [11]


def test_a_supervisor_that_stops_answering_leaves_its_instances_stopped(tmp_path: Path) -> None:
    followed, seen = _followed(tmp_path)
    followed.apply([_status(S.READY)])
    asyncio.run(followed.poll_once())  # no socket there
    assert seen[-1] == (S.READY, S.STOPPED, 8188)
    assert [s.state for s in followed.status()] == [S.STOPPED]
