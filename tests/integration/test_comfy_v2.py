"""Comfy API v2 end to end: `comfy-sdk`, unchanged and used as its README shows, pointed at a real
`comfyfleet serve` with two CPU ComfyUI instances (`COMFY_BASE_URL`), no API key (keys off).

What a user of the SDK checks: a workflow runs and its events stream to the end, the outputs
download (whole, by their absolute URLs, and by range), a reused Idempotency-Key is refused
without a second job, a running job is cancelled, and an input asset is uploaded once, found
again by its hash, read by range, and used by a workflow.
"""

from __future__ import annotations

import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from comfy_sdk import (
    Comfy,
    IdempotencyKeyReuse,
    OutputReady,
    StatusChange,
)

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, png_size, serve_config, sleep_graph

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("v2"))
    serve_config(ws)
    server = Server(ws, instances=2).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Comfy]:
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    with Comfy(timeout=60) as comfy:
        yield comfy


def _seed() -> int:
    return time.time_ns() % 1_000_000_007


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one colour (the project venv has no Pillow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\0" + b"\x10\x80\xf0" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _fleet_jobs(server: Server) -> int:
    return len(server.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"])


def test_a_workflow_streams_to_its_end_and_its_outputs_download(
    server: Server, client: Comfy
) -> None:
    workflow = client.workflows.from_json(model_free_graph(_seed(), "v2"))
    job = client.submit(workflow)
    events = list(job.events())
    statuses = [e.status for e in events if isinstance(e, StatusChange)]
    assert statuses[-1] == "succeeded"
    assert statuses.count("succeeded") == 1
    streamed = [e.output for e in events if isinstance(e, OutputReady)]
    assert [o.node_id for o in streamed] == ["3"]

    job.result()
    [image] = job.get_outputs("3")
    data = image.to_bytes()
    assert png_size(data) == (32, 32)
    assert image.to_bytes(range=(0, 7)) == data[:8]
    assert streamed[0].to_bytes() == data

    raw = server.http.get(f"/api/v2/jobs/{job.id}").json()
    url = raw["outputs"][0]["url"]
    assert url == f"{server.url}/api/v2/assets/{image.id}/content"
    with httpx.Client(trust_env=False) as plain:
        assert plain.get(url).content == data
    # an ordinary fleet job
    assert server.job(job.id)["status"] == "succeeded"


def test_a_reused_idempotency_key_is_refused_without_a_second_job(
    server: Server, client: Comfy
) -> None:
    workflow = client.workflows.from_json(model_free_graph(_seed(), "idem"))
    key = f"v2-{uuid.uuid4()}"
    first = client.submit(workflow, idempotency_key=key)
    before = _fleet_jobs(server)
    with pytest.raises(IdempotencyKeyReuse) as refused:
        client.submit(workflow, idempotency_key=key)
    assert refused.value.code == "idempotency_key_reuse"
    assert _fleet_jobs(server) == before
    assert first.result().status == "succeeded"


def test_a_running_job_is_cancelled(server: Server, client: Comfy) -> None:
    job = client.submit(client.workflows.from_json(sleep_graph(120, _seed())))
    deadline = time.monotonic() + 60
    while job.refresh().status != "running":
        assert time.monotonic() < deadline, f"the job did not start: {job.status}"
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the FleetSleep node
    assert job.cancel().status == "canceling"
    job.wait(timeout=60)
    assert job.status == "canceled"
    assert server.job(job.id)["status"] == "cancelled"


def test_an_asset_is_uploaded_once_found_by_hash_read_by_range_and_used(
    server: Server, client: Comfy
) -> None:
    data = _png(24, 16)
    asset = client.assets.from_bytes(data, filename=f"in-{_seed()}.png")
    asset.commit()
    assert asset.created_new is True
    assert asset.hash.startswith("blake3:")

    probe = server.http.head(f"/api/v2/assets/by-hash/{asset.hash}")
    assert probe.status_code == 200
    again = client.assets.from_bytes(data, filename="again.png")
    again.commit()  # HEAD by-hash, then from-hash: no upload
    assert (again.id, again.created_new) == (asset.id, False)

    url = asset.get_download_url().url
    assert url == f"{server.url}/api/v2/assets/{asset.id}/content"
    with httpx.Client(trust_env=False) as plain:
        ranged = plain.get(url, headers={"Range": "bytes=8-15"})
    assert (ranged.status_code, ranged.content) == (206, data[8:16])

    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}},
    }
    workflow = client.workflows.from_json(graph)
    workflow.set_input("1", "image", asset)
    job = client.run(workflow, timeout=120)
    [saved] = job.get_outputs("2")
    assert png_size(saved.to_bytes()) == (24, 16)


def test_a_file_written_into_the_input_folder_is_registered_and_used_by_path(
    server: Server,
) -> None:
    """A pipeline that already wrote an image into the fleet's input folder hands it to a job
    without uploading it (`from-path`), reads the graph the job ran, and the health route
    answers as the contract's clients probe it."""
    data = _png(20, 12)
    written = server.ws / "input" / "renders" / f"frame-{_seed()}.png"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_bytes(data)
    registered = server.http.post("/api/v2/assets/from-path", json={"path": str(written)})
    assert registered.status_code == 201, registered.text
    asset = registered.json()
    assert asset["created_new"] is True
    assert server.http.head(f"/api/v2/assets/by-hash/{asset['hash']}").status_code == 200

    reference = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "fp"}},
    }
    submitted = server.http.post("/api/v2/jobs", json={"workflow": graph})
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    finished = server.wait_all([job_id], timeout=120)[0]
    assert finished["status"] == "succeeded", finished
    [output] = server.http.get(f"/api/v2/jobs/{job_id}").json()["outputs"]
    with httpx.Client(trust_env=False) as plain:
        assert png_size(plain.get(output["url"]).content) == (20, 12)

    ran = server.http.get(f"/api/v2/jobs/{job_id}/workflow").json()
    assert ran["format"] == "api"
    assert ran["workflow"]["1"]["class_type"] == "LoadImage"
    assert isinstance(ran["workflow"]["1"]["inputs"]["image"], str)  # resolved to a file
    assert server.http.get("/api/v2/health").json() == {"status": "healthy"}
