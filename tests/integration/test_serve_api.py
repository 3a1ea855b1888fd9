"""The production job API end to end: real ComfyUI instances behind `comfyfleet serve`, real
S3 (moto), Azure (Azurite), HTTP PUT stores, and live progress read over SSE and WebSocket.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, png_size, serve_config
from tests.storage_servers import (
    AzuriteMissing,
    AzuriteServer,
    PutReceiver,
    S3Server,
    azurite_server,
    down_url,
    moto_s3_server,
    put_receiver,
)
from tests.tiny_model import CHECKPOINT_NAME, KSAMPLER_NODE, tiny_checkpoint, tiny_sd15_graph

pytestmark = pytest.mark.comfyui


@dataclass
class Env:
    server: Server
    s3: S3Server
    bucket: str
    put: PutReceiver
    azure: AzuriteServer | None
    azure_skip: str


def _storage_targets(
    s3: S3Server, bucket: str, put: PutReceiver, azure: AzuriteServer | None
) -> dict[str, Any]:
    targets: dict[str, Any] = {
        "s3": {
            "url": f"s3://{bucket}/runs",
            "endpoint_url": s3.endpoint_url,
            "region": s3.region,
            "access_key_id": s3.access_key_id,
            "secret_access_key": s3.secret_access_key,
            "addressing_style": "path",
        },
        "put": {"url": put.url, "attempts": 1},
        "down": {"url": down_url("/uploads/"), "attempts": 1},
    }
    if azure is not None:
        targets["azure"] = {
            "url": "az://outputs/runs",
            "azure_connection_string": azure.connection_string,
        }
    return targets


@pytest.fixture(scope="module")
def env(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tiny_checkpoint(comfyui_install)
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(moto_s3_server())
        bucket = s3.create_bucket("outputs")
        put = stack.enter_context(put_receiver())
        azure: AzuriteServer | None = None
        reason = ""
        try:
            azure = stack.enter_context(azurite_server())
            azure.create_container("outputs")
        except AzuriteMissing as exc:
            reason = f"Azurite is not available: {exc}"
            print(reason)
        ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("api"))
        serve_config(
            ws,
            models_root=str(comfyui_install / "models"),
            fleet={
                "probe_interval_s": 0.2,
                "backoff_initial_s": 0.5,
                "startup_timeout_s": 120,
                "extra_args": ["--preview-method", "latent2rgb"],
            },
            storage_targets=_storage_targets(s3, bucket, put, azure),
        )
        server = Server(ws).start()
        stack.callback(server.close)
        yield Env(server, s3, bucket, put, azure, reason)


def _seed() -> int:
    return time.time_ns() % 1_000_000_007


def _run(env: Env, body: dict[str, Any]) -> dict[str, Any]:
    answer = env.server.http.post("/v1/jobs", json=body, headers={"Prefer": "wait=120"})
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _image(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "succeeded", job
    return next(o for o in job["outputs"] if o["kind"] == "images")


def _fetch(url: str, env: Env) -> bytes:
    if url.startswith("/"):
        return env.server.http.get(url).raise_for_status().content
    with httpx.Client(trust_env=False) as client:
        return client.get(url).raise_for_status().content


# --- media out ----------------------------------------------------------------------------------


def test_local_outputs_carry_type_size_and_digest(env: Env) -> None:
    image = _image(_run(env, {"workflow": model_free_graph(_seed(), "local")}))
    data = _fetch(image["url"], env)
    assert png_size(data) == (32, 32)
    assert image["content_type"] == "image/png"
    assert (image["size"], image["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("target", ["s3", "azure", "put"])
def test_outputs_go_to_the_store_the_job_names(env: Env, target: str) -> None:
    if target == "azure" and env.azure is None:
        pytest.skip(env.azure_skip)
    job = _run(env, {"workflow": model_free_graph(_seed(), target), "storage": target})
    image = _image(job)
    data = _fetch(image["url"], env)
    assert png_size(data) == (32, 32)
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert image["key"] == f"{job['id']}/{image['path']}"
    if target == "s3":
        client = env.s3.client()
        try:
            stored = client.get_object(Bucket=env.bucket, Key=f"runs/{image['key']}")["Body"]
            assert stored.read() == data
        finally:
            client.close()
    if target == "put":
        assert env.put.puts()[-1].body == data


def test_images_can_be_converted_to_webp(env: Env) -> None:
    body = {"workflow": model_free_graph(_seed(), "webp"), "convert": {"format": "webp"}}
    image = _image(_run(env, body))
    data = _fetch(image["url"], env)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert image["content_type"] == "image/webp" and image["filename"].endswith(".webp")


def test_a_store_that_is_down_fails_the_job_as_retryable_and_keeps_the_files(env: Env) -> None:
    body = {"workflow": model_free_graph(_seed(), "kept"), "storage": "down", "max_attempts": 1}
    job = _run(env, body)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "storage_unavailable"
    assert job["error"]["retryable"] is True
    kept = list((env.server.ws / "output" / job["id"]).glob("kept*.png"))
    assert kept and png_size(kept[0].read_bytes()) == (32, 32)


# --- media in -----------------------------------------------------------------------------------


def _load_graph(image: str, seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": f"in{seed}"},
        },
    }


def test_uploaded_and_base64_inputs_reach_the_loader(env: Env) -> None:
    source = _fetch(_image(_run(env, {"workflow": model_free_graph(_seed(), "src")}))["url"], env)
    upload = env.server.http.post("/v1/assets", files={"file": ("in.png", source, "image/png")})
    assert upload.status_code in (200, 201), upload.text
    asset = upload.json()
    assert asset["sha256"] == hashlib.sha256(source).hexdigest()
    by_id = _run(env, {"workflow": _load_graph(f"asset:{asset['id']}", _seed())})
    assert png_size(_fetch(_image(by_id)["url"], env)) == (32, 32)
    inline = "data:image/png;base64," + base64.b64encode(source).decode()
    by_data = _run(env, {"workflow": _load_graph(inline, _seed())})
    assert png_size(_fetch(_image(by_data)["url"], env)) == (32, 32)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/x.png",
        "http://[::1]/x.png",
    ],
)
def test_input_urls_to_private_addresses_are_refused(env: Env, url: str) -> None:
    answer = env.server.http.post("/v1/jobs", json={"workflow": _load_graph(url, 1)})
    assert answer.status_code in (400, 422), answer.text
    error = answer.json()["error"]
    assert error["code"] == "input_refused"
    assert "node 1 (LoadImage)" in error["message"]


# --- limits -------------------------------------------------------------------------------------


def test_a_running_timeout_interrupts_the_instance(env: Env) -> None:
    slow = {"1": {"class_type": "FleetSleep", "inputs": {"seconds": 60, "seed": _seed()}}}
    job = _run(env, {"workflow": slow, "timeouts": {"running_s": 1.5}})
    assert job["status"] == "failed" and job["error"]["code"] == "timeout", job
    assert job["error"]["phase"] == "running"
    instances = env.server.http.get("/v1/instances").json()["instances"]
    port = next(i["port"] for i in instances if i["index"] == job["instance"])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as comfy:
        deadline = time.monotonic() + 30
        while comfy.get("/queue").json()["queue_running"] and time.monotonic() < deadline:
            time.sleep(0.2)  # an interrupt lands at the node's next check
        assert comfy.get("/queue").json()["queue_running"] == []  # not sleeping on for 60 s
    after = _run(env, {"workflow": model_free_graph(_seed(), "after")})
    assert after["status"] == "succeeded"


# --- live progress ------------------------------------------------------------------------------


def _sse(env: Env, job_id: str, previews: bool = False) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    params = {"previews": "true"} if previews else {}
    with env.server.http.stream("GET", f"/v1/jobs/{job_id}/events", params=params) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = "message"
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                envelope = json.loads(line.split(":", 1)[1])
                assert envelope["job_id"] == job_id and envelope["event"] == name
                events.append((name, envelope["data"]))
    return events


def test_sse_streams_sampler_steps_previews_outputs_and_the_end(env: Env) -> None:
    graph = tiny_sd15_graph(CHECKPOINT_NAME, seed=_seed(), steps=6, prefix="live")
    job = env.server.http.post("/v1/jobs", json={"workflow": graph}).json()
    events = _sse(env, job["id"], previews=True)
    names = [name for name, _ in events]
    steps = [d for n, d in events if n == "progress" and d.get("node") == KSAMPLER_NODE]
    assert [s["step"] for s in steps] == list(range(1, 7)), steps
    assert {s["steps"] for s in steps} == {6} and steps[-1]["value"] == 1.0
    assert "preview" in names
    assert "output" in names
    assert names[-1] == "status" and events[-1][1]["status"] == "succeeded"


def test_a_websocket_follows_several_jobs(env: Env) -> None:
    ids = [
        env.server.http.post(
            "/v1/jobs",
            json={"workflow": tiny_sd15_graph(CHECKPOINT_NAME, seed=_seed(), prefix="ws")},
        ).json()["id"]
        for _ in range(2)
    ]
    seen: dict[str, list[str]] = {job_id: [] for job_id in ids}
    with websockets.sync.client.connect(env.server.url.replace("http", "ws") + "/v1/ws") as ws:
        for job_id in ids:
            ws.send(json.dumps({"op": "subscribe", "job_id": job_id}))
        done: set[str] = set()
        deadline = time.monotonic() + 120
        while done != set(ids) and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=60))
            if message.get("job_id") in seen:
                seen[message["job_id"]].append(message["event"])
                data = message.get("data") or {}
                if message["event"] == "status" and data.get("status") == "succeeded":
                    done.add(message["job_id"])
    assert done == set(ids)
    for events in seen.values():
        assert "progress" in events and events[-1] == "status"
