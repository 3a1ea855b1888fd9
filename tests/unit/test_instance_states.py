"""The instance state machine, driven with in-memory processes (no ComfyUI, no sockets)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.errors import SupervisorError
from comfyfleet.supervise import (
    FleetSettings,
    InstanceEvent,
    InstanceSpec,
    InvalidTransition,
    State,
    Supervisor,
)
from comfyfleet.supervise._states import check_transition
from tests.unit.fake_processes import Behaviour, FakeLauncher, FakeProber

FAST = {
    "probe_interval_s": 0.01,
    "startup_timeout_s": 0.5,
    "backoff_initial_s": 0.01,
    "backoff_factor": 2.0,
    "backoff_max_s": 0.05,
    "stop_grace_s": 0.05,
    "start_retries": 2,
    "unhealthy_after_s": 0.1,
}


def _spec(tmp_path: Path, index: int = 0, hook: Path | None = None) -> InstanceSpec:
    return InstanceSpec(
        index=index,
        command=lambda port: ["python", "main.py", "--port", str(port)],
        env={},
        cwd=tmp_path,
        host="127.0.0.1",
        wanted_port=8188 + index,
        device="cpu",
        log_path=tmp_path / f"instance-{index}.log",
        pre_start_hook=hook,
    )


def run(
    tmp_path: Path,
    launcher: FakeLauncher,
    body: Callable[[Supervisor, list[InstanceEvent]], Awaitable[None]],
    *,
    instances: int = 1,
    hook: Path | None = None,
    **settings: Any,
) -> list[InstanceEvent]:
    """Start a supervisor over fake processes, run `body`, stop everything; return the events."""
    fleet = FleetSettings(**{**FAST, **settings})
    events: list[InstanceEvent] = []

    async def main() -> None:
        supervisor = Supervisor(
            [_spec(tmp_path, i, hook) for i in range(instances)],
            fleet,
            launcher=launcher,
            prober=FakeProber(launcher),
            port_probe=lambda host, port: True,
        )
        supervisor.add_listener(events.append)
        supervisor.start()
        try:
            async with asyncio.timeout(10):
                await body(supervisor, events)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    return events


def moves(events: list[InstanceEvent], index: int = 0) -> list[str]:
    return [str(e.new) for e in events if e.instance == index]


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


def test_an_instance_starts_becomes_ready_and_stops(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(ready_after=3))

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        assert await sup.wait_settled(5)
        status = sup.status()[0]
        assert (status.state, status.port, status.version) == (State.READY, 8188, "9.9.9")
        assert status.pid == launcher.processes[0].pid

    events = run(tmp_path, launcher, body)
    assert moves(events) == ["starting", "ready", "stopping", "stopped"]
    assert launcher.processes[0].signals == [signal.SIGTERM]
    assert launcher.running() == []


def test_a_crash_goes_through_backoff_and_comes_back_ready(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)
        launcher.processes[0].exit(-9)
        await until(lambda: len(launcher.processes) == 2 and sup.instances[0].state == State.READY)
        assert sup.status()[0].restarts == 1
        assert sup.status()[0].pid == launcher.processes[1].pid

    events = run(tmp_path, launcher, body)
    assert moves(events)[:6] == ["starting", "ready", "exited", "backoff", "starting", "ready"]
    crash = next(e for e in events if e.new == State.EXITED)
    assert crash.reason == "exited with signal SIGKILL"


def test_the_first_crash_restarts_at_once_and_a_second_one_backs_off(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)
        launcher.processes[0].exit(-9)
        await until(lambda: len(launcher.processes) == 2 and sup.instances[0].state == State.READY)
        launcher.processes[1].exit(-9)
        await until(lambda: len(launcher.processes) == 3 and sup.instances[0].state == State.READY)

    events = run(tmp_path, launcher, body, backoff_initial_s=0.02, backoff_reset_s=60)
    delays = [e.reason.rsplit("restarting in ", 1)[1] for e in events if e.new == State.BACKOFF]
    assert delays == ["0s", "0.02s"]


def test_a_start_that_always_fails_ends_fatal_after_the_retries(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(exit_at_start=3))

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        assert not await sup.wait_settled(5)

    events = run(tmp_path, launcher, body, start_retries=2)
    assert moves(events)[:-2] == ["starting", "backoff"] * 2 + ["starting", "fatal"]
    assert len(launcher.processes) == 3  # first start + 2 retries
    fatal = next(e for e in events if e.new == State.FATAL)
    assert "exited with exit code 3 before it was ready" in fatal.reason
    assert "3 failed starts" in fatal.reason


def test_backoff_grows_exponentially_up_to_the_maximum(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(exit_at_start=1))

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)

    events = run(
        tmp_path, launcher, body, start_retries=5, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    delays = [e.reason.rsplit("restarting in ", 1)[1] for e in events if e.new == State.BACKOFF]
    assert delays == ["0.01s", "0.02s", "0.04s", "0.05s", "0.05s"]


def test_fatal_instance_restarts_on_request(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(exit_at_start=1), Behaviour(exit_at_start=1), Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        assert not await sup.wait_settled(5)
        assert sup.instances[0].state == State.FATAL
        assert sup.restart(0) == [0]
        await until(lambda: sup.instances[0].state != State.FATAL)
        assert await sup.wait_settled(5)

    events = run(tmp_path, launcher, body, start_retries=1)
    assert "fatal" in moves(events)
    assert moves(events)[-3:] == ["ready", "stopping", "stopped"]


def test_a_start_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(ready_after=None))

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await until(lambda: any(e.new == State.BACKOFF for e in events))

    events = run(tmp_path, launcher, body, startup_timeout_s=0.05)
    backoff = next(e for e in events if e.new == State.BACKOFF)
    assert "not ready after 0.05s" in backoff.reason
    assert launcher.processes[0].signals[0] == signal.SIGTERM
    assert launcher.processes[0].returncode == -signal.SIGTERM


def test_stop_escalates_to_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(ignore_sigterm=True))

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)

    run(tmp_path, launcher, body, stop_grace_s=0.05)
    assert launcher.processes[0].signals == [signal.SIGTERM, signal.SIGKILL]
    assert launcher.running() == []


def test_busy_is_reported_while_the_queue_is_not_empty(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(busy=True))

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)
        assert sup.instances[0].state == State.BUSY
        launcher.processes[0].behaviour.busy = False
        await until(lambda: sup.instances[0].state == State.READY)

    events = run(tmp_path, launcher, body)
    assert moves(events)[:3] == ["starting", "busy", "ready"]


def test_an_instance_that_stops_answering_is_restarted(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(), Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)
        launcher.processes[0].behaviour.answers = False
        await until(lambda: len(launcher.processes) == 2 and sup.instances[0].state == State.READY)

    events = run(tmp_path, launcher, body, unhealthy_after_s=0.05)
    exited = next(e for e in events if e.new == State.EXITED)
    assert exited.reason.startswith("stopped answering for")
    assert launcher.processes[0].returncode is not None


def test_a_failing_pre_start_hook_is_a_failed_start(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    launcher = FakeLauncher(Behaviour(), hook_exit=4)

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        assert not await sup.wait_settled(5)

    events = run(tmp_path, launcher, body, hook=hook, start_retries=0)
    fatal = next(e for e in events if e.new == State.FATAL)
    assert f"pre-start hook {hook} failed with exit code 4" in fatal.reason
    assert launcher.processes == []  # ComfyUI itself never started
    assert launcher.hooks[0]["COMFYFLEET_PORT"] == "8188"


def test_two_instances_are_independent(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        await sup.wait_settled(5)
        victim = next(p for p in launcher.processes if p.port == 8188)
        other = next(p for p in launcher.processes if p.port == 8189)
        victim.exit(-9)
        await until(lambda: len(launcher.processes) == 3 and sup.settled())
        assert other.returncode is None
        assert [s.restarts for s in sup.status()] == [1, 0]

    events = run(tmp_path, launcher, body, instances=2)
    assert "exited" not in moves(events, 1)


def test_a_busy_port_is_replaced_by_the_next_free_one(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour())
    fleet = FleetSettings(**FAST)

    async def main() -> None:
        taken = {8188, 8190}
        sup = Supervisor(
            [_spec(tmp_path, 0), _spec(tmp_path, 1)],
            fleet,
            launcher=launcher,
            prober=FakeProber(launcher),
            port_probe=lambda host, port: port not in taken,
        )
        sup.start()
        try:
            assert await sup.wait_settled(5)
            assert [s.port for s in sup.status()] == [8191, 8189]
            assert "port 8188 is in use, took 8191" in sup.status()[0].reason or any(
                "took 8191" in line
                for line in (tmp_path / "instance-0.log").read_text().splitlines()
            )
        finally:
            await sup.stop()

    asyncio.run(main())


def test_illegal_transitions_are_refused() -> None:
    check_transition(State.STOPPED, State.STARTING)
    with pytest.raises(InvalidTransition, match="from stopped to ready"):
        check_transition(State.STOPPED, State.READY)
    with pytest.raises(InvalidTransition):
        check_transition(State.FATAL, State.READY)


def test_one_instance_is_stopped_started_and_restarted_on_request(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        assert await sup.wait_settled(5)
        assert await sup.control(1, "stop") == "instance 1 stopped"
        assert [s.state for s in sup.status()] == [State.READY, State.STOPPED]
        assert await sup.control(1, "stop") == "instance 1 was stopped already"
        assert await sup.control(1, "start") == "instance 1 starting"
        await until(lambda: sup.instances[1].state == State.READY)
        assert await sup.control(1, "start") == "instance 1 is ready already"
        first = sup.status()[1].pid
        assert await sup.control(1, "restart") == "instance 1 restarted"
        await until(lambda: sup.instances[1].state == State.READY)
        assert sup.status()[1].pid != first
        assert sup.status()[1].restarts == 1
        with pytest.raises(SupervisorError, match="no instance 7"):
            await sup.control(7, "stop")
        with pytest.raises(SupervisorError, match="unknown action 'pause'"):
            await sup.control(0, "pause")

    events = run(tmp_path, launcher, body, instances=2)
    assert moves(events, 1) == [
        *("starting", "ready", "stopping", "stopped"),
        *("starting", "ready", "stopping", "stopped"),
        *("starting", "ready", "stopping", "stopped"),
    ]
    assert moves(events, 0) == ["starting", "ready", "stopping", "stopped"]


def test_a_restart_of_a_fatal_instance_retries_at_once(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(exit_at_start=1), Behaviour(exit_at_start=1), Behaviour())

    async def body(sup: Supervisor, events: list[InstanceEvent]) -> None:
        assert not await sup.wait_settled(5)
        assert await sup.control(0, "restart") == "instance 0 retrying now"
        await until(lambda: sup.instances[0].state != State.FATAL)
        assert await sup.wait_settled(5)

    run(tmp_path, launcher, body, start_retries=1)
