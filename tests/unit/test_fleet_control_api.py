"""`/v1/instances/{ref}/restart|stop|start|logs` and `/v1/stats` on the app, over an in-memory
store and registry: what a client sends, what lands in the store for the agent, what comes back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyfleet.auth import KeyStore
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.gateway._stats import percentile, summarize
from comfyfleet.jobs import JobEnding, JobStatus, LogTail, MemoryJobStore, MemoryRegistry, NewJob
from tests.registry_contract import agent, instance

NOW = 10_000.0


def _service(tmp_path: Path) -> Service:
    return Service(
        store=MemoryJobStore(),
        output_dir=tmp_path,
        settings=ServeSettings(),
        registry=MemoryRegistry(),
    )


async def _fleet(service: Service, *, now: float) -> None:
    registry = service.registry
    await registry.report(agent("a"), [instance(0, "a"), instance(1, "a")], now=now)
    attached = instance(2, "a", details={"attached": True}, base_url="http://box:8188")
    await registry.report(agent("a"), [instance(0, "a"), instance(1, "a"), attached], now=now)
    await registry.report(agent("b"), [instance(1, "b")], now=now)
    await registry.report(agent("old"), [instance(7, "old")], now=now - 3600)


def _call(service: Service, calls: Any, **app_args: Any) -> Any:
    async def main() -> Any:
        app = create_app(service, **app_args)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await calls(client)

    return asyncio.run(main())


def test_a_restart_is_a_command_for_the_agent_that_runs_the_instance(tmp_path: Path) -> None:
    service = _service(tmp_path)
    woken: list[bool] = []
    service.wake_commands = lambda: woken.append(True)

    async def calls(client: httpx.AsyncClient) -> None:
        await _fleet(service, now=time.time())
        answer = await client.post("/v1/instances/0/restart")
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["instance"], body["action"], body["state"]) == ("a:0", "restart", "ready")
        stop = await client.post("/v1/instances/b:1/stop")
        assert stop.status_code == 202 and stop.json()["instance"] == "b:1"
        (restart,) = await service.registry.take_commands("a")
        assert (restart.index, restart.action, restart.id) == (0, "restart", body["command"])
        (stopped,) = await service.registry.take_commands("b")
        assert (stopped.index, stopped.action) == (1, "stop")

    _call(service, calls)
    assert woken == [True, True]


def test_what_cannot_be_acted_on_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    service = _service(tmp_path)

    async def calls(client: httpx.AsyncClient) -> list[tuple[int, str, str]]:
        await _fleet(service, now=time.time())
        found = []
        for url in (
            "/v1/instances/9/start",
            "/v1/instances/1/restart",
            "/v1/instances/old:7/restart",
            "/v1/instances/2/stop",
            "/v1/instances/a:2/logs",
        ):
            answer = await client.request("GET" if url.endswith("logs") else "POST", url)
            error = answer.json()["error"]
            found.append((answer.status_code, error["code"], error["message"]))
        for agent_id in ("a", "b", "old"):
            assert await service.registry.take_commands(agent_id) == []
        return found

    assert _call(service, calls) == [
        (404, "instance_not_found", "no instance '9' in the fleet"),
        (409, "instance_ambiguous", "several agents have an instance 1: name one as agent:index"),
        (409, "agent_gone", "the agent of instance old:7 is gone: nothing runs it now"),
        (
            409,
            "instance_attached",
            "instance a:2 is an attached server: comfyfleet does not run it, so its process is "
            "where it runs",
        ),
        (
            409,
            "instance_attached",
            "instance a:2 is an attached server: comfyfleet does not run it, so its log is "
            "where it runs",
        ),
    ]


def test_reading_logs_asks_the_agent_for_them_and_answers_its_last_lines(tmp_path: Path) -> None:
    service = _service(tmp_path)

    async def calls(client: httpx.AsyncClient) -> None:
        await _fleet(service, now=time.time())

        async def agent_writes() -> None:  # what the agent's command runner does, in short
            while not (taken := await service.registry.take_commands("a")):
                await asyncio.sleep(0.02)
            (tail,) = taken
            assert (tail.action, tail.index) == ("tail", 0)
            assert tail.until is not None and tail.until > time.time() + 20
            lines = ("starting server", "To see the GUI go to: http://127.0.0.1:8188", "ok")
            await service.registry.put_log_tail(LogTail("a", 0, lines, time.time()))

        writer = asyncio.create_task(agent_writes())
        answer = await client.get("/v1/instances/a:0/logs", params={"lines": 2})
        await writer
        assert answer.status_code == 200
        body = answer.json()
        assert body["lines"] == ["To see the GUI go to: http://127.0.0.1:8188", "ok"]
        assert body["instance"] == "a:0" and body["updated_at"] > 0
        again = await client.get("/v1/instances/a:0/logs")
        assert len(again.json()["lines"]) == 3
        assert await service.registry.take_commands("a") == []  # asked again within 5 s: no row

    _call(service, calls)


def test_control_needs_an_admin_key(tmp_path: Path) -> None:
    service = _service(tmp_path)
    keys = KeyStore(tmp_path / "keys.json")
    reader = keys.create("reader", scopes=frozenset({"read", "submit"})).token

    async def calls(client: httpx.AsyncClient) -> tuple[int, str]:
        answer = await client.post(
            "/v1/instances/0/restart", headers={"Authorization": f"Bearer {reader}"}
        )
        return answer.status_code, answer.json()["error"]["details"]["needs"]

    assert _call(service, calls, keys=keys) == (403, "admin")


def test_percentiles_are_values_that_occurred_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([4.0], 99) == 4.0
    assert percentile([], 50) is None


def _ended(status: JobStatus, created: float, started: float | None, finished: float) -> JobEnding:
    return JobEnding(status, 0, created, started, finished)


def test_a_window_counts_endings_per_bucket_and_leaves_empty_buckets_without_latency() -> None:
    endings = [
        _ended(JobStatus.SUCCEEDED, NOW - 70, NOW - 65, NOW - 5),  # newest bucket, 65 s in all
        _ended(JobStatus.FAILED, NOW - 12, NOW - 11, NOW - 10),  # newest bucket, 2 s
        _ended(JobStatus.SUCCEEDED, NOW - 200, NOW - 199, NOW - 179),  # the first bucket
        _ended(JobStatus.CANCELLED, NOW - 400, None, NOW - 300),  # before the window
    ]
    summary = summarize(endings, now=NOW, window_s=180, bucket_s=60)
    assert summary["totals"] == {
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
        "jobs_per_minute": 1.0,
    }
    first, middle, last = summary["buckets"]
    assert [b["start"] for b in summary["buckets"]] == [NOW - 180, NOW - 120, NOW - 60]
    assert (first["succeeded"], first["total_p50"]) == (1, 21.0)
    assert (middle["succeeded"], middle["failed"], middle["total_p50"]) == (0, 0, None)
    assert (last["succeeded"], last["failed"]) == (1, 1)
    assert (last["total_p50"], last["total_p95"]) == (2.0, 65.0)
    assert summary["latency"]["running_s"] == {"p50": 20.0, "p95": 60.0, "p99": 60.0}


def test_stats_show_the_queue_by_priority_and_refuse_too_many_buckets(tmp_path: Path) -> None:
    service = _service(tmp_path)
    graph = {"1": {"class_type": "SaveImage", "inputs": {}}}

    async def calls(client: httpx.AsyncClient) -> None:
        store = service.store
        for n, priority in enumerate((0, 0, 5)):
            await store.enqueue(NewJob(id=f"j{n}", workflow=graph, priority=priority))
        await store.enqueue(NewJob(id="done", workflow=graph))
        await store.claim("w", lease_s=30)  # j2 (priority 5) runs
        answer = await client.get("/v1/stats", params={"window_s": 600, "bucket_s": 60})
        assert answer.status_code == 200
        body = answer.json()
        assert body["queue"] == {
            "queued": 3,
            "running": 1,
            "by_priority": [{"priority": 0, "queued": 3}],
        }
        assert len(body["buckets"]) == 10 and body["truncated"] is False
        refused = await client.get("/v1/stats", params={"window_s": 86400, "bucket_s": 10})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "too_many_buckets"

    _call(service, calls)


@pytest.mark.parametrize("bucket_s", [5, 7200])
def test_stats_bounds_are_checked(tmp_path: Path, bucket_s: int) -> None:
    async def calls(client: httpx.AsyncClient) -> int:
        answer = await client.get("/v1/stats", params={"bucket_s": bucket_s})
        return answer.status_code

    assert _call(_service(tmp_path), calls) == 422
