"""Warm-ups and restarts on request in the instance state machine (fake processes), the warm-up
runner against a fake ComfyUI, and a restart asked for through the control socket."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.errors import SupervisorError
from comfyfleet.supervise import (
    ControlClient,
    FleetSettings,
    FollowedSupervisor,
    HttpWarmupRunner,
    InstanceEvent,
    InstanceSpec,
    State,
    Supervisor,
    Warmup,
)
from comfyfleet.supervise._control import ControlServer
from tests.unit.fake_comfy import FakeComfy
from tests.unit.fake_processes import Behaviour, FakeLauncher, FakeProber

FAST = {
    "probe_interval_s": 0.01,
    "startup_timeout_s": 0.5,
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "stop_grace_s": 0.05,
    "start_retries": 1,
}
GRAPH = {"1": {"class_type": "FleetEcho", "inputs": {"text": "warm"}}}


class FakeWarmer:
    """Answers each warm-up with the next of `results` (the last repeats), after `delay_s`."""

    def __init__(self, *results: str | None, delay_s: float = 0.0) -> None:
        self.results, self.delay_s = list(results) or [None], delay_s
        self.calls: list[tuple[str, Mapping[str, Any]]] = []
        self.ended: list[float] = []

    async def run(self, url: str, graph: Mapping[str, Any], timeout_s: float) -> str | None:
        self.calls.append((url, graph))
        await asyncio.sleep(self.delay_s)
        self.ended.append(time.time())
        return self.results[min(len(self.calls), len(self.results)) - 1]


def spec(tmp_path: Path, index: int = 0) -> InstanceSpec:
    return InstanceSpec(
        index=index,
        command=lambda port: ["python", "main.py", "--port", str(port)],
        env={},
        cwd=tmp_path,
        host="127.0.0.1",
        wanted_port=8188 + index,
        device="cpu",
        log_path=tmp_path / f"instance-{index}.log",
    )


def supervise(
    tmp_path: Path,
    launcher: FakeLauncher,
    body: Callable[[Supervisor], Awaitable[None]],
    *,
    warmup: Warmup | None,
    warmer: FakeWarmer | None = None,
    instances: int = 1,
) -> list[InstanceEvent]:
    events: list[InstanceEvent] = []

    async def main() -> None:
        supervisor = Supervisor(
            [spec(tmp_path, i) for i in range(instances)],
            FleetSettings(**FAST),
            launcher=launcher,
            prober=FakeProber(launcher),
            port_probe=lambda host, port: True,
            warmup=warmup,
            warmer=warmer,
        )
        supervisor.add_listener(events.append)
        supervisor.start()
        try:
            async with asyncio.timeout(10):
                await body(supervisor)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    return events


def moves(events: list[InstanceEvent], index: int = 0) -> list[str]:
    return [str(e.new) for e in events if e.instance == index]


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


def test_an_instance_is_ready_only_after_its_warm_up_ran(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(ready_after=2))
    warmer = FakeWarmer(delay_s=0.1)

    async def body(sup: Supervisor) -> None:
        assert await sup.wait_settled(5)
        [status] = sup.status()
        assert status.state == State.READY
        assert warmer.calls == [("http://127.0.0.1:8188", GRAPH)]
        assert status.ready_since is not None and status.ready_since >= warmer.ended[0]

    events = supervise(tmp_path, launcher, body, warmup=Warmup(GRAPH), warmer=warmer)
    assert moves(events) == ["starting", "warming", "ready", "stopping", "stopped"]
    warming = next(e for e in events if e.new == State.WARMING)
    assert warming.reason == "running the warm-up workflow"


def test_an_instance_can_have_a_warm_up_of_its_own_or_none(tmp_path: Path) -> None:
    own = {"1": {"class_type": "FleetEcho", "inputs": {"text": "mine"}}}
    warmer = FakeWarmer()

    async def body(sup: Supervisor) -> None:
        assert await sup.wait_settled(5)

    warmup = Warmup(GRAPH, {1: own, 2: None})
    events = supervise(tmp_path, FakeLauncher(), body, warmup=warmup, warmer=warmer, instances=3)
    assert sorted(warmer.calls, key=lambda call: call[0]) == [
        ("http://127.0.0.1:8188", GRAPH),
        ("http://127.0.0.1:8189", own),
    ]
    assert moves(events, 2)[:2] == ["starting", "ready"]


def test_a_failing_warm_up_is_a_failed_start_whose_reason_the_state_shows(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    failure = "warm-up failed: node 1 (FleetFail): RuntimeError: no model"
    warmer = FakeWarmer(failure)

    async def body(sup: Supervisor) -> None:
        assert not await sup.wait_settled(5)
        [status] = sup.status()
        assert status.state == State.FATAL
        assert status.reason == f"{failure}; gave up after 2 failed starts in a row"

    events = supervise(tmp_path, launcher, body, warmup=Warmup(GRAPH), warmer=warmer)
    assert moves(events)[:6] == ["starting", "warming", "backoff", "starting", "warming", "fatal"]
    backoff = next(e for e in events if e.new == State.BACKOFF)
    assert backoff.reason.startswith(f"{failure}; restarting in ")
    assert [p.signals for p in launcher.processes] == [[signal.SIGTERM]] * 2


def test_a_process_that_dies_during_its_warm_up_backs_off(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    warmer = FakeWarmer(delay_s=5)

    async def body(sup: Supervisor) -> None:
        await until(lambda: sup.instances[0].state == State.WARMING)
        launcher.processes[0].exit(1)
        await until(lambda: sup.instances[0].state == State.BACKOFF)
        assert sup.status()[0].reason.startswith("exited with exit code 1 during the warm-up")

    supervise(tmp_path, launcher, body, warmup=Warmup(GRAPH), warmer=warmer)


def test_a_restart_on_request_stops_the_process_and_warms_the_new_one(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    warmer = FakeWarmer()

    async def body(sup: Supervisor) -> None:
        assert await sup.wait_settled(5)
        first = launcher.processes[0]
        assert await sup.recycle(0, "watchdog: job j1 made no progress")
        await until(lambda: len(launcher.processes) == 2 and sup.instances[0].state == State.READY)
        assert first.signals == [signal.SIGTERM]
        status = sup.status()[0]
        assert (status.restarts, status.pid) == (1, launcher.processes[1].pid)
        assert len(warmer.calls) == 2  # after each start
        assert not await sup.recycle(7, "no such instance")

    events = supervise(tmp_path, launcher, body, warmup=Warmup(GRAPH), warmer=warmer)
    assert moves(events)[:7] == [
        "starting",
        "warming",
        "ready",
        "restarting",
        "starting",
        "warming",
        "ready",
    ]
    restarting = next(e for e in events if e.new == State.RESTARTING)
    assert restarting.reason == "watchdog: job j1 made no progress"
    assert next(e for e in events if e.old == State.RESTARTING).reason == "restart 1"


def test_an_instance_that_is_not_serving_is_not_restarted_on_request(tmp_path: Path) -> None:
    launcher = FakeLauncher(Behaviour(ready_after=None))

    async def body(sup: Supervisor) -> None:
        await until(lambda: sup.instances[0].state == State.STARTING)
        assert not await sup.recycle(0, "why")

    events = supervise(tmp_path, launcher, body, warmup=None)
    assert "restarting" not in moves(events)


def test_a_followed_supervisor_asks_for_a_restart_through_the_control_socket() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # a socket path must be short
        path = Path(folder)
        launcher = FakeLauncher()

        async def body(sup: Supervisor) -> None:
            server = ControlServer(sup, path / "s.sock", workspace=path, shutdown=sup.stop)
            await server.start()
            try:
                assert await sup.wait_settled(5)
                followed = FollowedSupervisor(ControlClient(path / "s.sock"))
                assert await followed.recycle(0, "watchdog: memory grew")
                await until(lambda: len(launcher.processes) == 2)
                client = ControlClient(path / "s.sock")
                with pytest.raises(SupervisorError) as refused:
                    await asyncio.to_thread(client.request, "recycle")
                assert refused.value.message == (
                    "supervisor refused 'recycle': recycle needs an instance number ('instance')"
                )
            finally:
                await server.close()

        events = supervise(path, launcher, body, warmup=None)
        restarting = next(e for e in events if e.new == State.RESTARTING)
        assert restarting.reason == "watchdog: memory grew"


def test_the_warm_up_runner_runs_the_graph_and_says_what_went_wrong() -> None:
    async def main() -> None:
        fake = FakeComfy("warm")
        fake.start()
        runner = HttpWarmupRunner(make_client=fake.client)
        url = "http://127.0.0.1:9000"
        try:
            assert await runner.run(url, GRAPH, 5) is None
            [prompt_id] = fake.ran
            assert str(uuid.UUID(prompt_id)) == prompt_id
            fail = {"1": {"class_type": "FleetFail", "inputs": {"message": "no model"}}}
            assert await runner.run(url, fail, 5) == (
                "warm-up failed: node 1 (FleetFail): RuntimeError: no model"
            )
            nope = {"1": {"class_type": "Nope", "inputs": {}}}
            rejected = await runner.run(url, nope, 5)
            assert rejected is not None and rejected.startswith("warm-up workflow rejected: ")
            assert "Nope" in rejected
            wedge = {"1": {"class_type": "FleetWedge", "inputs": {"instance": -1}}}
            assert await runner.run(url, wedge, 0.2) == (
                "warm-up did not finish within 0.2s (watchdog.warmup_timeout_s)"
            )
            assert fake.interrupts[-1] is not None
            assert str(uuid.UUID(fake.interrupts[-1])) == fake.interrupts[-1]
        finally:
            fake.kill()

    asyncio.run(main())
