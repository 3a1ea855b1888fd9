"""`POST /v1/jobs` and `/v1/jobs:validate` take workflows saved from the ComfyUI editor (UI
format) and queue the API graph the editor would, converted with the node definitions the
instances registered (here: the cached ComfyUI's `/object_info`, from the fixtures)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyfleet.gateway import NodeTypes, ServeSettings, Service, create_app
from comfyfleet.gateway import _intake as intake
from comfyfleet.jobs import MemoryJobStore, MemoryRegistry, NodeSchemas
from tests.registry_contract import agent, instance
from tests.ui_workflows import object_info, references

DEFAULT = references()["workflows"]["default_workflow"]


def _service(tmp_path: Path, *, registered: bool = True, **settings: Any) -> Service:
    registry = MemoryRegistry()
    if registered:
        schemas = NodeSchemas.from_object_info(object_info())

        async def register() -> None:
            await registry.put_schemas(schemas)
            await registry.report(agent("a"), [instance(0, "a", schema_digest=schemas.digest)])

        asyncio.run(register())
    return Service(
        store=MemoryJobStore(),
        output_dir=tmp_path,
        registry=registry,
        node_types=NodeTypes(registry),
        settings=ServeSettings(**settings),
    )


def _post(service: Service, path: str, body: Any, **headers: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(path, json=body, headers=headers)

    return asyncio.run(call())


def test_a_ui_workflow_is_queued_as_the_api_graph_the_editor_would_queue(tmp_path: Path) -> None:
    service = _service(tmp_path)
    answer = _post(service, "/v1/jobs", {"workflow": DEFAULT["workflow"]})
    assert answer.status_code == 202
    job = asyncio.run(service.store.get(answer.json()["id"]))
    assert job.workflow == DEFAULT["output"]


def test_validate_converts_and_checks_a_ui_workflow(tmp_path: Path) -> None:
    answer = _post(_service(tmp_path), "/v1/jobs:validate", {"workflow": DEFAULT["workflow"]})
    assert answer.status_code == 200
    assert answer.json() == {"valid": True, "nodes": 7, "options": {}}


def test_a_repeated_ui_workflow_with_the_same_key_is_the_same_job(tmp_path: Path) -> None:
    service = _service(tmp_path)
    body = {"workflow": DEFAULT["workflow"]}
    first = _post(service, "/v1/jobs", body, **{"Idempotency-Key": "k1"})
    again = _post(service, "/v1/jobs", body, **{"Idempotency-Key": "k1"})
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_node_type_no_instance_has_is_a_422_naming_the_node(tmp_path: Path) -> None:
    workflow = {
        "nodes": [{"id": 12, "type": "FancyUpscaler", "mode": 0, "inputs": [], "outputs": []}],
        "links": [],
    }
    answer = _post(_service(tmp_path), "/v1/jobs", {"workflow": workflow})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_workflow"
    assert error["message"] == (
        "node 12 (FancyUpscaler): no instance of this fleet has this node type"
    )
    assert error["details"]["node_id"] == "12"
    assert error["details"]["class_type"] == "FancyUpscaler"


def test_a_node_that_cannot_be_converted_is_a_422_with_the_reason(tmp_path: Path) -> None:
    workflow = {
        "nodes": [{"id": 3, "type": "WebcamCapture", "mode": 0, "widgets_values": ["", 8, 8]}],
        "links": [],
    }
    answer = _post(_service(tmp_path), "/v1/jobs:validate", {"workflow": workflow})
    assert answer.status_code == 422
    details = answer.json()["error"]["details"]
    assert (details["node_id"], details["class_type"]) == ("3", "WebcamCapture")
    assert details["reason"] == (
        "widget 'image': its image is taken from the editor's webcam when queued"
    )


def test_without_registered_node_definitions_a_ui_workflow_is_a_503_to_retry(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path, registered=False, retry_after_s=3)
    answer = _post(service, "/v1/jobs", {"workflow": DEFAULT["workflow"]})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "node_definitions_unavailable"
    assert answer.headers["Retry-After"] == "3"


def test_a_ui_workflow_larger_than_the_limit_is_a_413(tmp_path: Path) -> None:
    service = _service(tmp_path, max_graph_nodes=5)
    answer = _post(service, "/v1/jobs", {"workflow": DEFAULT["workflow"]})
    assert answer.status_code == 413
    assert answer.json()["error"]["details"] == {
        "limit": 5,
        "setting": "serve.max_graph_nodes",
    }


def test_a_large_ui_workflow_is_converted_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = intake.convert_workflow

    def recorded(*args: Any, **kwargs: Any) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "convert_workflow", recorded)
    count = intake.LARGE_GRAPH + 1
    nodes = [
        {"id": i, "type": "EmptyImage", "mode": 0, "widgets_values": [8, 8, 1, i]}
        for i in range(1, count + 1)
    ]
    answer = _post(
        _service(tmp_path), "/v1/jobs:validate", {"workflow": {"nodes": nodes, "links": []}}
    )
    assert answer.status_code == 200 and answer.json()["nodes"] == count
    assert threads and threads[0] != threading.main_thread().name
