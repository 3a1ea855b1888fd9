"""Comfy API v2 over the gateway, against the in-memory job store: the contract's shapes, its
error codes, single-use Idempotency-Keys, cursor pages, assets by hash, and the SSE stream.

No instances run (jobs stay queued unless a test moves them through the store itself, as the
dispatcher would); the end-to-end run with real ComfyUI and the SDK is
tests/integration/test_comfy_v2.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from blake3 import blake3

from comfyfleet.assets import AssetResolver, AssetStore
from comfyfleet.auth import READ, SUBMIT, KeyStore
from comfyfleet.facades.comfy_v2 import comfy_v2_router
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.jobs import JobOutput, MemoryJobStore

T = TypeVar("T")
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 64


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _Known:
    async def known(self, wanted: set[str]) -> frozenset[str]:
        return frozenset({"EmptyImage", "SaveImage", "LoadImage"})

    def free_text(self, class_type: str, input_name: str) -> bool:
        return input_name == "text"


class Gateway:
    """The app with the v2 router over a memory store and an asset store in `tmp_path`."""

    def __init__(self, tmp_path: Path, keys: KeyStore | None = None, **settings: Any) -> None:
        self.assets = AssetStore(tmp_path / "input")
        self.service = Service(
            store=MemoryJobStore(),
            output_dir=tmp_path / "out",
            settings=ServeSettings(**settings),
            media=AssetResolver(self.assets),
        )
        self.service.node_types = _Known()  # type: ignore[assignment]
        router = comfy_v2_router(self.service, self.assets)
        self.app = create_app(self.service, routers=(router,), keys=keys)

    def client(self, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers)

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.client() as client:
                return await client.request(method, url, **kwargs)

        return run(go())

    def finish(self, job_id: str, outputs: list[dict[str, Any]]) -> None:
        """Run the job through the store as the dispatcher would, ending it succeeded."""

        async def go() -> None:
            store = self.service.store
            claimed = await store.claim("w1", instance=0, lease_s=30)
            assert claimed is not None and claimed.id == job_id
            await store.complete(job_id, "w1", [JobOutput.from_json(o) for o in outputs])

        run(go())


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def _submit(gw: Gateway, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return gw.call("POST", "/api/v2/jobs", json=body or {"workflow": GRAPH}, headers=headers)


# --- jobs -------------------------------------------------------------------------------------


def test_a_submission_answers_201_with_every_field_of_the_contract(gw: Gateway) -> None:
    answer = _submit(gw, {"workflow": GRAPH, "metadata": {"client": "acme"}, "priority": 5})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert set(job) >= {
        "id", "status", "created_at", "started_at", "completed_at", "expires_at",
        "queue_position", "progress", "outputs", "error", "metrics", "urls",
    }  # fmt: skip
    assert job["status"] == "queued"
    assert job["queue_position"] == 1
    assert (job["started_at"], job["completed_at"], job["progress"], job["error"]) == (
        None, None, None, None,
    )  # fmt: skip
    assert job["outputs"] == []
    assert job["metadata"] == {"client": "acme"}
    assert job["priority"] == 5
    assert job["urls"] == {
        "self": f"http://gw.test/api/v2/jobs/{job['id']}",
        "events": f"http://gw.test/api/v2/jobs/{job['id']}/events",
        "cancel": f"http://gw.test/api/v2/jobs/{job['id']}/cancel",
    }
    assert job["expires_at"] > job["created_at"]
    # an ordinary fleet job: /v1 lists it, with its labels
    v1 = gw.call("GET", f"/v1/jobs/{job['id']}").json()
    assert v1["status"] == "queued"
    assert v1["options"]["metadata"] == {"client": "acme"}


def test_an_idempotency_key_is_single_use_and_never_replayed(gw: Gateway) -> None:
    first = gw.call(
        "POST", "/api/v2/jobs", json={"workflow": GRAPH}, headers={"Idempotency-Key": "k-1"}
    )
    assert first.status_code == 201, first.text
    again = gw.call(
        "POST", "/api/v2/jobs", json={"workflow": GRAPH}, headers={"Idempotency-Key": "k-1"}
    )
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "idempotency_key_reuse"
    other_body = {"workflow": GRAPH, "priority": 3}
    conflict = gw.call("POST", "/api/v2/jobs", json=other_body, headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 422
    assert conflict.json()["error"]["code"] == "idempotency_key_reuse"
    listed = gw.call("GET", "/api/v2/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [first.json()["id"]]


def test_a_refused_submission_leaves_its_key_free(gw: Gateway) -> None:
    bad = {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}
    refused = gw.call("POST", "/api/v2/jobs", json=bad, headers={"Idempotency-Key": "k-2"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_workflow"
    ok = gw.call(
        "POST", "/api/v2/jobs", json={"workflow": GRAPH}, headers={"Idempotency-Key": "k-2"}
    )
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"workflow": {"nodes": [], "links": []}}, 422, "workflow_format_ui"),
        ({"workflow": GRAPH, "webhook_url": "https://x"}, 422, "invalid_workflow"),
        ({"workflow": GRAPH, "extra_data": {"api_key_comfy_org": "k"}}, 400, "invalid_request"),
        ({"workflow": GRAPH, "metadata": "label"}, 422, "metadata_invalid"),
        ({"workflow": GRAPH, "nope": 1}, 400, "invalid_request"),
        ({"workflow": "x"}, 422, "invalid_workflow"),
        (
            {
                "workflow": GRAPH
                | {
                    "3": {
                        "class_type": "LoadImage",
                        "inputs": {"image": {"__type": "core/ASSET", "info": {"id": "f" * 64}}},
                    }
                }
            },
            422,
            "missing_asset",
        ),
        (
            {
                "workflow": GRAPH
                | {
                    "3": {
                        "class_type": "LoadImage",
                        "inputs": {
                            "image": {
                                "__type": "core/ASSET",
                                "info": {"hash": "blake3:" + "a" * 64},
                            }
                        },
                    }
                }
            },
            422,
            "missing_asset",
        ),
    ],
)
def test_refusals_speak_the_contract_codes(
    gw: Gateway, body: dict[str, Any], status: int, code: str
) -> None:
    answer = _submit(gw, body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text


def test_a_full_queue_is_429_queue_full_with_retry_after(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, max_queued=1)
    assert _submit(gw).status_code == 201
    full = _submit(gw)
    assert full.status_code == 429
    assert full.json()["error"]["code"] == "queue_full"
    assert full.headers["Retry-After"] == "5"


def test_an_unknown_job_is_404_not_found(gw: Gateway) -> None:
    for method, url in (("GET", "/api/v2/jobs/nope"), ("POST", "/api/v2/jobs/nope/cancel")):
        answer = gw.call(method, url)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


def test_a_succeeded_job_shows_its_outputs_as_absolute_asset_urls(gw: Gateway) -> None:
    job_id = _submit(gw).json()["id"]
    out = gw.service.output_dir / job_id
    out.mkdir(parents=True)
    (out / "t_00001_.png").write_bytes(PNG)
    outputs = [
        {"node_id": "2", "kind": "images", "filename": "t_00001_.png", "subfolder": job_id,
         "type": "output", "path": "t_00001_.png", "content_type": "image/png",
         "size": len(PNG)},
        {"node_id": "5", "kind": "text", "text": "hello"},
    ]  # fmt: skip
    gw.finish(job_id, outputs)
    job = gw.call("GET", f"/api/v2/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["progress"]["value"] == 1.0
    assert job["completed_at"] is not None
    image, text = job["outputs"]
    assert image == {
        "node_id": "2",
        "name": "t_00001_.png",
        "type": "image",
        "content_type": "image/png",
        "size_bytes": len(PNG),
        "id": f"{job_id}:0",
        "hash": None,
        "url": f"http://gw.test/api/v2/assets/{job_id}:0/content",
        "url_expires_at": image["url_expires_at"],
        "job_id": job_id,
    }
    assert gw.call("GET", image["url"]).content == PNG
    ranged = gw.call("GET", image["url"], headers={"Range": "bytes=0-7"})
    assert (ranged.status_code, ranged.content) == (206, PNG[:8])
    assert text["type"] == "text"
    assert gw.call("GET", text["url"]).text == "hello"
    assert gw.call("GET", f"/api/v2/assets/{job_id}:0").json()["job_id"] == job_id


def test_a_finished_job_is_never_expired(gw: Gateway) -> None:
    job_id = _submit(gw).json()["id"]
    gw.finish(job_id, [])
    job = gw.call("GET", f"/api/v2/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["expires_at"] > job["completed_at"]


def test_cancel_of_a_queued_job_answers_canceled(gw: Gateway) -> None:
    job_id = _submit(gw).json()["id"]
    answer = gw.call("POST", f"/api/v2/jobs/{job_id}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "canceled"
    assert gw.call("POST", f"/api/v2/jobs/{job_id}/cancel").json()["status"] == "canceled"


def test_cancel_of_a_running_job_answers_canceling(gw: Gateway) -> None:
    job_id = _submit(gw).json()["id"]
    run(gw.service.store.claim("w1", instance=0, lease_s=30))
    assert gw.call("POST", f"/api/v2/jobs/{job_id}/cancel").json()["status"] == "canceling"


def test_listing_pages_with_next_cursor_and_filters(gw: Gateway) -> None:
    ids = [_submit(gw, {"workflow": GRAPH, "metadata": {"n": str(i)}}).json()["id"]
           for i in range(3)]  # fmt: skip
    gw.call("POST", f"/api/v2/jobs/{ids[0]}/cancel")
    first = gw.call("GET", "/api/v2/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in first["jobs"]] == [ids[2], ids[1]]
    second = gw.call("GET", "/api/v2/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [j["id"] for j in second.json()["jobs"]] == [ids[0]]
    assert second.json()["next_cursor"] is None
    canceled = gw.call("GET", "/api/v2/jobs", params={"status": "canceled"}).json()["jobs"]
    assert [j["id"] for j in canceled] == [ids[0]]
    labelled = gw.call("GET", "/api/v2/jobs", params={"metadata[n]": "1"}).json()["jobs"]
    assert [j["id"] for j in labelled] == [ids[1]]
    for params, code in (
        ({"cursor": "bogus"}, "invalid_cursor"),
        ({"limit": "0"}, "invalid_request"),
        ({"status": "done"}, "invalid_request"),
    ):
        answer = gw.call("GET", "/api/v2/jobs", params=params)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, code)


# --- assets -----------------------------------------------------------------------------------


def _upload(gw: Gateway, data: bytes, expected: str | None = None) -> httpx.Response:
    fields = {"file_path": "photo.png", "content_type": "image/png"}
    if expected is not None:
        fields["expected_hash"] = expected
    files = {"file": ("photo.png", data, "image/png")}
    return gw.call("POST", "/api/v2/assets", data=fields, files=files)


def test_an_upload_is_found_by_its_blake3_and_resolves_in_a_graph(gw: Gateway) -> None:
    b3 = "blake3:" + blake3(PNG).hexdigest()
    assert gw.call("HEAD", f"/api/v2/assets/by-hash/{b3}").status_code == 404
    created = _upload(gw, PNG, expected=b3)
    assert created.status_code == 201, created.text
    asset = created.json()
    assert asset["id"] == hashlib.sha256(PNG).hexdigest()
    assert (asset["hash"], asset["created_new"], asset["size_bytes"]) == (b3, True, len(PNG))
    assert asset["url"] == f"http://gw.test/api/v2/assets/{asset['id']}/content"
    assert _upload(gw, PNG).json()["created_new"] is False
    assert gw.call("HEAD", f"/api/v2/assets/by-hash/{b3}").status_code == 200
    minted = gw.call("POST", "/api/v2/assets/from-hash", json={"hash": b3})
    assert (minted.status_code, minted.json()["id"]) == (200, asset["id"])
    ranged = gw.call("GET", asset["url"], headers={"Range": "bytes=1-3"})
    assert (ranged.status_code, ranged.content) == (206, PNG[1:4])
    ref = {"__type": "core/ASSET", "info": {"id": asset["id"], "hash": b3}}
    graph = GRAPH | {"3": {"class_type": "LoadImage", "inputs": {"image": ref}}}
    job = _submit(gw, {"workflow": graph}).json()
    stored = run(gw.service.store.get(job["id"]))
    assert stored.workflow["3"]["inputs"]["image"] == gw.assets.get(asset["id"]).comfy_name


def test_a_mismatched_expected_hash_is_409_and_keeps_nothing(gw: Gateway) -> None:
    answer = _upload(gw, PNG, expected="blake3:" + "0" * 64)
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "hash_mismatch")
    sha = hashlib.sha256(PNG).hexdigest()
    assert gw.call("GET", f"/api/v2/assets/{sha}").status_code == 404


def test_from_hash_of_unknown_bytes_is_404_blob_not_found(gw: Gateway) -> None:
    answer = gw.call("POST", "/api/v2/assets/from-hash", json={"hash": "sha256:" + "1" * 64})
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "blob_not_found")


def test_another_keys_assets_and_jobs_do_not_exist(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    alice = keys.create("alice", scopes=frozenset({SUBMIT, READ})).token
    bob = keys.create("bob", scopes=frozenset({SUBMIT, READ})).token
    gw = Gateway(tmp_path, keys=keys)

    async def go() -> None:
        async with gw.client(Authorization=f"Bearer {alice}") as a:
            files = {"file": ("p.png", PNG, "image/png")}
            asset = await a.post("/api/v2/assets", data={"file_path": "p.png"}, files=files)
            job = await a.post("/api/v2/jobs", json={"workflow": GRAPH})
        async with gw.client(Authorization=f"Bearer {bob}") as b:
            b3 = asset.json()["hash"]
            assert (await b.head(f"/api/v2/assets/by-hash/{b3}")).status_code == 404
            missing = await b.post("/api/v2/assets/from-hash", json={"hash": b3})
            assert missing.json()["error"]["code"] == "blob_not_found"
            seen = await b.get(f"/api/v2/jobs/{job.json()['id']}")
            assert (seen.status_code, seen.json()["error"]["code"]) == (404, "not_found")
        async with gw.client() as anonymous:
            refused = await anonymous.get("/api/v2/jobs")
            assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")

    run(go())


# --- events -----------------------------------------------------------------------------------


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = next((line[6:] for line in lines if line.startswith("data: ")), None)
        if name is not None and data is not None:
            found.append((name, json.loads(data)))
    return found


def test_the_stream_of_a_job_that_already_ended_sends_its_end_and_closes(gw: Gateway) -> None:
    job_id = _submit(gw).json()["id"]
    gw.finish(job_id, [{"node_id": "5", "kind": "text", "text": "hi"}])
    answer = gw.call("GET", f"/api/v2/jobs/{job_id}/events")
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = _events(answer.text)
    assert [name for name, _ in events] == ["output", "status"]
    assert events[0][1]["id"] == f"{job_id}:0"
    assert events[1][1] == {"status": "succeeded", "queue_position": None}


def test_the_stream_follows_a_running_job_to_its_end(gw: Gateway) -> None:
    job_id = _submit(gw).json()["id"]
    store = gw.service.store

    async def go() -> list[tuple[str, dict[str, Any]]]:
        await store.claim("w1", instance=0, lease_s=30)
        async with gw.client() as client:
            # the in-process transport hands the body over once the stream ends, so the job is
            # moved on beside it; the stream must see all of it and end after the final status
            reading = asyncio.create_task(client.get(f"/api/v2/jobs/{job_id}/events"))
            await asyncio.sleep(0.2)
            await store.publish(job_id, "executing", {"node": "1"})
            await store.publish(job_id, "executed", {"node": "1"})
            await store.publish(job_id, "progress", {"node": "2", "value": 1, "max": 2})
            await asyncio.sleep(0.1)
            await store.complete(job_id, "w1", [])
            answer = await asyncio.wait_for(reading, 10)
        return _events(answer.text)

    events = run(go())
    assert events[0] == ("status", {"status": "running", "queue_position": None})
    progress = [data for name, data in events if name == "progress"]
    assert progress[-1]["nodes_done"] == 1
    assert progress[-1]["nodes_total"] == 2
    assert progress[-1]["value"] == 0.75
    assert progress[-1]["current_node_class"] == "SaveImage"
    assert events[-1] == ("status", {"status": "succeeded", "queue_position": None})


def test_the_v2_routes_are_left_out_of_the_native_openapi_document(gw: Gateway) -> None:
    """Their contract is comfy-api-proxy's (see `comfyfleet.facades`), not our document's."""
    paths = gw.call("GET", "/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/api/v2/")]
    assert "/v1/jobs" in paths
