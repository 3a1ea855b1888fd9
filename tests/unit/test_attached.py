"""Attached servers: the reduced state machine, driven by a scripted prober (no sockets), their
place in the supervisor, and the URLs that are refused at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from comfyfleet.comfy import ComfyClient
from comfyfleet.config import load_settings
from comfyfleet.errors import ConfigError, SupervisorError
from comfyfleet.supervise import (
    AttachedInstance,
    AttachedSpec,
    FleetSettings,
    HttpProber,
    InstanceEvent,
    InvalidTransition,
    ProbeResult,
    State,
    Supervisor,
    build_supervisor,
)
from comfyfleet.supervise._attached import attached_specs, check_attached_transition
from comfyfleet.workspace import Workspace
from tests.unit.fake_processes import FakeLauncher, FakeProber

UP = ProbeResult(ok=True, version="0.3.1")
BUSY = ProbeResult(ok=True, busy=True)
DOWN = ProbeResult(ok=False, error="connection refused")
OTHER = ProbeResult(ok=False, not_comfyui=True, error="GET /system_stats failed (HTTP 404)")


def _server(**settings: object) -> tuple[AttachedInstance, list[InstanceEvent]]:
    events: list[InstanceEvent] = []
    server = AttachedInstance(
        AttachedSpec(2, "http://gpu-box:8188"),
        FleetSettings(**settings),  # type: ignore[arg-type]
        prober=_Scripted([]),
        emit=events.append,
    )
    server.state = State.PROBING
    return server, events


class _Scripted:
    """Answers probes from a script; the last answer repeats."""

    def __init__(self, answers: list[ProbeResult]) -> None:
        self.answers = answers
        self.urls: list[str] = []

    async def probe_url(self, url: str) -> ProbeResult:
        self.urls.append(url)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def aclose(self) -> None:
        return None


def _moves(events: list[InstanceEvent]) -> list[str]:
    return [str(e.new) for e in events]


def test_first_answer_decides_at_once() -> None:
    firsts = ((UP, "ready"), (BUSY, "busy"), (DOWN, "unreachable"), (OTHER, "not_comfyui"))
    for answer, state in firsts:
        server, events = _server()
        server.observe(answer)
        assert _moves(events) == [state]
    assert events[0].url == "http://gpu-box:8188" and events[0].port == 8188


def test_a_serving_server_is_lost_only_after_failures_in_a_row() -> None:
    server, events = _server(attach_failures=3)
    server.observe(UP)
    server.observe(DOWN)
    server.observe(DOWN)
    server.observe(UP)  # one good answer resets the count
    server.observe(DOWN)
    server.observe(DOWN)
    assert _moves(events) == ["ready"]
    server.observe(DOWN)
    assert _moves(events) == ["ready", "unreachable"]
    assert "3 probes failed in a row: connection refused" in events[-1].reason


def test_it_comes_back_and_follows_busy() -> None:
    server, events = _server(attach_failures=1)
    for answer in (UP, BUSY, BUSY, UP, DOWN, DOWN, UP, OTHER, UP):
        server.observe(answer)
    assert _moves(events) == [
        "ready",
        "busy",
        "ready",
        "unreachable",
        "ready",
        "not_comfyui",
        "ready",
    ]
    status = server.status()
    assert status.attached and status.url == "http://gpu-box:8188" and status.pid is None
    assert status.version == "0.3.1" and status.ready_since is not None


def test_not_comfyui_and_unreachable_swap_as_answers_change() -> None:
    server, events = _server()
    for answer in (OTHER, OTHER, DOWN, OTHER):
        server.observe(answer)
    assert _moves(events) == ["not_comfyui", "unreachable", "not_comfyui"]
    assert server.status().ready_since is None


def test_attached_transitions_are_checked() -> None:
    check_attached_transition(State.UNREACHABLE, State.READY)
    with pytest.raises(InvalidTransition):
        check_attached_transition(State.STOPPED, State.READY)
    with pytest.raises(InvalidTransition):
        check_attached_transition(State.READY, State.BACKOFF)


def _supervisor(tmp_path: Path, prober: _Scripted, urls: tuple[str, ...]) -> Supervisor:
    fleet = FleetSettings(probe_interval_s=0.01, attach=urls)
    launcher = FakeLauncher()
    return Supervisor(
        [],
        fleet,
        launcher=launcher,
        prober=FakeProber(launcher),
        attached=attached_specs(fleet.attach, first_index=0),
        url_prober=prober,
    )


def test_supervisor_runs_the_loop_and_stops_watching(tmp_path: Path) -> None:
    prober = _Scripted([DOWN, UP])
    events: list[InstanceEvent] = []

    async def main() -> None:
        supervisor = _supervisor(tmp_path, prober, ("http://a:1/", "https://b/comfy"))
        supervisor.add_listener(events.append)
        supervisor.start()
        # Settled at the first answers (one down, one up): a server that is down is not a
        # failed start of ours, so `up` does not give up on the fleet for it.
        assert await supervisor.wait_settled(5)
        async with asyncio.timeout(5):
            while not all(s.state == State.READY for s in supervisor.status()):
                await asyncio.sleep(0.01)
        assert await supervisor.wait_settled(1)
        assert [s.index for s in supervisor.status()] == [0, 1]
        assert supervisor.restart() == []  # nothing to restart: attached servers are not ours
        await supervisor.stop()

    asyncio.run(main())
    assert set(prober.urls) == {"http://a:1", "https://b/comfy"}
    assert {e.new for e in events if e.instance == 1} >= {State.PROBING, State.STOPPED}
    assert events[-1].new == State.STOPPED


def test_urls_refused_at_start() -> None:
    with pytest.raises(ValueError, match="'ftp://x' is not an http"):
        FleetSettings(attach=("ftp://x",))
    with pytest.raises(ValueError, match="'http://' has no host"):
        FleetSettings(attach=("http://",))
    with pytest.raises(SupervisorError, match="listed twice"):
        attached_specs(("http://a:1", "http://a:1"), first_index=0)


def test_instances_zero_needs_attached_servers(tmp_path: Path) -> None:
    settings = load_settings({"workspace": tmp_path / "ws", "fleet": {"attach": ["http://a:1"]}})
    ws = Workspace.from_settings(settings)
    with pytest.raises(ConfigError, match="nothing to serve"):
        build_supervisor(FleetSettings(instances=0), ws)
    supervisor = build_supervisor(FleetSettings(instances=0, attach=("http://a:1",)), ws)
    assert supervisor.instances == [] and [a.spec.index for a in supervisor.attached] == [0]


def test_http_prober_tells_not_comfyui_from_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "comfy":
            if request.url.path == "/system_stats":
                return httpx.Response(200, json={"system": {"comfyui_version": "0.3.1"}})
            return httpx.Response(200, json={"exec_info": {"queue_remaining": 1}})
        if host == "web":
            return httpx.Response(404, text="<html>not found</html>")
        if host == "json":
            return httpx.Response(200, json={"hello": "world"})
        if host == "proxy":
            return httpx.Response(502, text="bad gateway")
        raise httpx.ConnectError("refused", request=request)

    async def main() -> list[ProbeResult]:
        prober = HttpProber()
        for host in ("comfy", "web", "json", "proxy", "down"):
            url = f"http://{host}:8188"
            prober._clients[url] = ComfyClient(url, transport=httpx.MockTransport(handler))
        try:
            hosts = ("comfy", "web", "json", "proxy", "down")
            return [await prober.probe_url(f"http://{h}:8188") for h in hosts]
        finally:
            await prober.aclose()

    comfy, web, json_, proxy, down = asyncio.run(main())
    assert comfy.ok and comfy.busy and comfy.version == "0.3.1"
    assert not web.ok and web.not_comfyui
    assert not json_.ok and json_.not_comfyui and "not ComfyUI" in (json_.error or "")
    assert not proxy.ok and not proxy.not_comfyui
    assert not down.ok and not down.not_comfyui
