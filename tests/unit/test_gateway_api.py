"""The gateway in front of a job store alone: what a client sends and what it gets back.

No instances run here (the dispatcher is not attached), so jobs stay queued; the end-to-end
behaviour with real ComfyUI is in tests/integration/test_serve*.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from comfyfleet.auth import KeyStore
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.jobs import JobStatus, MemoryJobStore, Timeouts

T = TypeVar("T")
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _Known:
    async def known(self, wanted: set[str]) -> frozenset[str]:
        return frozenset({"EmptyImage", "SaveImage", "LoadImage", "CheckpointLoaderSimple"})

    def free_text(self, class_type: str, input_name: str) -> bool:
        return input_name == "text"


def make_service(tmp_path: Path, **settings: Any) -> Service:
    service = Service(
        store=MemoryJobStore(),
        output_dir=tmp_path / "out",
        settings=ServeSettings(**settings),
        storage_names=frozenset({"default", "archive"}),
    )
    service.node_types = _Known()  # type: ignore[assignment]
    return service


async def client_for(service: Service, **app_args: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(service, **app_args))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return make_service(tmp_path, max_queued=3)


def call(service: Service, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with await client_for(service) as client:
            return await client.request(method, url, **kwargs)

    return run(go())


def test_a_submission_is_queued_with_its_options(service: Service) -> None:
    body = {
        "workflow": GRAPH,
        "webhook": {"url": "https://hooks.example/x?token=secret"},
        "convert": {"format": "webp", "quality": 80},
        "timeouts": {"queued_s": 60},
        "storage": "archive",
    }
    answer = call(service, "POST", "/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] == "queued" and job["queue_position"] == 0
    assert job["options"]["convert"] == {"format": "webp", "quality": 80}
    assert job["options"]["storage"] == "archive"
    assert "token=secret" not in answer.text  # a webhook URL may carry a credential
    stored = run(service.store.get(job["id"]))
    assert stored.options.webhook is not None
    assert stored.options.webhook.url == "https://hooks.example/x?token=secret"
    assert stored.options.timeouts == Timeouts(queued_s=60.0)


@pytest.mark.parametrize(
    ("body", "status", "code", "mentions"),
    [
        ({"workflow": GRAPH, "storage": "nowhere"}, 422, "invalid_storage", "nowhere"),
        ({"workflow": GRAPH, "convert": {"format": "gif"}}, 422, "invalid_convert", "webp"),
        ({"workflow": GRAPH, "timeouts": {"queued_s": -1}}, 422, "invalid_timeouts", "queued_s"),
        ({"workflow": GRAPH, "webhook": {"url": "ftp://x"}}, 422, "invalid_webhook", "http"),
        ({"workflow": GRAPH, "colour": "red"}, 422, "invalid_request", "colour"),
        (
            {"workflow": {"1": {"class_type": "Nope", "inputs": {}}}},
            400,
            "invalid_workflow",
            "Nope",
        ),
    ],
)
def test_bad_requests_say_what_is_wrong(
    service: Service, body: dict[str, Any], status: int, code: str, mentions: str
) -> None:
    answer = call(service, "POST", "/v1/jobs", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert mentions in json.dumps(error)


def test_the_same_idempotency_key_replays_and_a_different_body_conflicts(
    service: Service,
) -> None:
    async def go() -> list[httpx.Response]:
        async with await client_for(service) as client:
            headers = {"Idempotency-Key": "order-42"}
            first = await client.post("/v1/jobs", json={"workflow": GRAPH}, headers=headers)
            again = await client.post("/v1/jobs", json={"workflow": GRAPH}, headers=headers)
            other = {"workflow": GRAPH, "priority": 5}
            different = await client.post("/v1/jobs", json=other, headers=headers)
            return [first, again, different]

    first, again, different = run(go())
    assert first.status_code == 202 and again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert different.status_code == 409
    assert different.json()["error"]["code"] == "job_conflict"
    jobs, _ = run(service.store.list_jobs())
    assert len(jobs) == 1


def test_a_full_queue_is_429_with_retry_after(service: Service) -> None:
    async def go() -> list[httpx.Response]:
        async with await client_for(service) as client:
            return [await client.post("/v1/jobs", json={"workflow": GRAPH}) for _ in range(4)]

    answers = run(go())
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[-1].headers["retry-after"] == "5"
    assert answers[-1].json()["error"]["code"] == "queue_full"


def test_validate_checks_without_storing(service: Service) -> None:
    good = call(service, "POST", "/v1/jobs:validate", json={"workflow": GRAPH})
    assert good.status_code == 200 and good.json()["valid"] is True
    broken = dict(GRAPH)
    broken["2"] = {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}
    bad = call(service, "POST", "/v1/jobs:validate", json={"workflow": broken})
    assert bad.status_code in (400, 422)
    assert "9" in bad.json()["error"]["message"]
    assert run(service.store.count(JobStatus.QUEUED)) == 0


def test_bodies_over_the_limit_and_bad_json_are_4xx(tmp_path: Path) -> None:
    service = make_service(tmp_path, max_body_bytes=2048)
    json_type = {"content-type": "application/json"}
    big = call(service, "POST", "/v1/jobs", content=b"{" + b" " * 4096 + b"}", headers=json_type)
    assert big.status_code == 413
    broken = call(service, "POST", "/v1/jobs", content=b"{not json", headers=json_type)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"


def test_output_paths_cannot_leave_the_jobs_folder(service: Service) -> None:
    (service.output_dir / "job1").mkdir(parents=True)
    (service.output_dir / "secret.txt").write_text("no")
    # Encoded, so that the client does not resolve the dots before sending.
    for path in ("/v1/outputs/job1/..%2Fsecret.txt", "/v1/outputs/job1/a%2F..%2F..%2Fsecret.txt"):
        answer = call(service, "GET", path)
        assert answer.status_code == 400, path
        assert answer.json()["error"]["code"] == "invalid_path"


def test_with_keys_every_route_but_health_needs_one(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    keys = KeyStore(tmp_path / "keys.json")
    issued = keys.create("tests")

    async def go() -> tuple[dict[str, int], int, int]:
        async with await client_for(service, keys=keys) as client:
            spec = (
                await client.get(
                    "/openapi.json", headers={"Authorization": f"Bearer {issued.token}"}
                )
            ).json()
            refused: dict[str, int] = {}
            for path, methods in spec["paths"].items():
                concrete = path.replace("{", "").replace("}", "").replace(":path", "")
                for method in methods:
                    answer = await client.request(method.upper(), concrete)
                    refused[f"{method.upper()} {path}"] = answer.status_code
                    assert issued.token not in answer.text
            health = (await client.get("/health")).status_code
            docs = (await client.get("/docs")).status_code
            return refused, health, docs

    refused, health, docs = run(go())
    assert len(refused) >= 10
    open_routes = {route: code for route, code in refused.items() if route != "GET /health"}
    assert set(open_routes.values()) == {401}, open_routes
    assert health == 200 and docs == 401


def test_an_idempotency_key_replays_only_within_its_ttl(tmp_path: Path) -> None:
    service = make_service(tmp_path, idempotency_ttl_s=0.05)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with await client_for(service) as client:
            headers = {"Idempotency-Key": "late"}
            first = await client.post("/v1/jobs", json={"workflow": GRAPH}, headers=headers)
            await asyncio.sleep(0.2)
            late = await client.post("/v1/jobs", json={"workflow": GRAPH}, headers=headers)
            return first, late

    first, late = run(go())
    assert first.status_code == 202
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "idempotency_key_expired"


@pytest.mark.parametrize("cursor", ["abc", "-1", "9" * 20, "\uff11\uff12"])
def test_a_cursor_the_server_did_not_hand_out_is_400(service: Service, cursor: str) -> None:
    answer = call(service, "GET", "/v1/jobs", params={"cursor": cursor})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("source", "mentions"),
    [
        ("file:///etc/passwd", "file://"),
        ("s3://deployment-bucket/secret.safetensors", "s3://"),
        ("http://127.0.0.1:9/model.safetensors", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
    ],
)
def test_model_urls_a_client_may_not_use_are_refused_naming_the_node(
    service: Service, source: str, mentions: str
) -> None:
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": source}}}
    answer = call(service, "POST", "/v1/jobs", json={"workflow": graph})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "input_refused"
    assert "node 1 (CheckpointLoaderSimple): input 'ckpt_name'" in error["message"]
    assert mentions in error["message"]
    assert run(service.store.count(JobStatus.QUEUED)) == 0
