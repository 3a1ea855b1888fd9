"""Following a detached supervisor: what changed between two `status` answers becomes the
events a supervisor in the process would have sent."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from comfyfleet.errors import SupervisorError
from comfyfleet.supervise import (
    ControlClient,
    FleetSettings,
    FollowedSupervisor,
    InstanceEvent,
    InstanceStatus,
    Supervisor,
)
from comfyfleet.supervise import State as S
from comfyfleet.supervise._control import ControlServer
from tests.unit.fake_processes import Behaviour, FakeLauncher, FakeProber
from tests.unit.test_instance_states import FAST, _spec


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


def test_a_followed_supervisor_controls_one_instance_through_the_socket(tmp_path: Path) -> None:
    """`control` crosses the control socket to the supervisor that runs the fleet, and an
    error there (an unknown instance) comes back as the supervisor's own message."""
    short = Path(tempfile.mkdtemp(prefix="cf", dir="/tmp"))  # socket paths must be short
    launcher = FakeLauncher(Behaviour())

    async def main() -> None:
        supervisor = Supervisor(
            [_spec(tmp_path, 0)],
            FleetSettings(**FAST),
            launcher=launcher,
            prober=FakeProber(launcher),
            port_probe=lambda host, port: True,
        )

        async def down() -> None:
            await supervisor.stop()

        server = ControlServer(supervisor, short / "s.sock", workspace=tmp_path, shutdown=down)
        await server.start()
        supervisor.start()
        try:
            assert await supervisor.wait_settled(5)
            followed = FollowedSupervisor(ControlClient(short / "s.sock"))
            assert await followed.control(0, "stop") == "instance 0 stopped"
            assert [s.state for s in followed.status()] == [S.STOPPED]
            with pytest.raises(SupervisorError, match="no instance 3 in this fleet"):
                await followed.control(3, "start")
        finally:
            await supervisor.stop()
            await server.close()

    asyncio.run(main())
    short.rmdir()
