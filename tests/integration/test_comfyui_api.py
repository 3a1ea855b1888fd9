"""The ComfyUI API on the fleet, driven the way ComfyUI clients drive a single ComfyUI: a real
`comfyfleet serve` with 2 CPU instances, plain HTTP and a WebSocket client."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, png_size, serve_config, sleep_graph
from tests.tiny_model import CHECKPOINT_NAME, KSAMPLER_NODE, tiny_checkpoint, tiny_sd15_graph

pytestmark = pytest.mark.comfyui

END = ("execution_success", "execution_error", "execution_interrupted")


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tiny_checkpoint(comfyui_install)
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("comfyapi"))
    serve_config(
        ws,
        models_root=str(comfyui_install / "models"),
        fleet={"extra_args": ["--preview-method", "latent2rgb"]},
    )
    started = Server(ws, instances=2).start()
    try:
        yield started
    finally:
        started.close()


def _seed() -> int:
    return time.time_ns() % 1_000_000_007


class Listener:
    """A ComfyUI WebSocket client: every JSON message, by prompt, in arrival order."""

    def __init__(
        self, server: Server, client_id: str | None = None, *, flags: dict[str, Any] | None = None
    ) -> None:
        self.client_id = client_id or uuid.uuid4().hex
        url = server.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        self.socket = websockets.sync.client.connect(url, max_size=None).__enter__()
        if flags is not None:  # as the current editor does, right after connecting
            self.socket.send(json.dumps({"type": "feature_flags", "data": flags}))
        self.first = json.loads(self.socket.recv(timeout=10))
        self.messages: list[dict[str, Any]] = []
        self.binary: list[bytes] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.socket:
                if isinstance(message, bytes):
                    self.binary.append(message)
                else:
                    self.messages.append(json.loads(message))
        except Exception:
            pass
        self._done.set()

    def of(self, prompt_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if (m.get("data") or {}).get("prompt_id") == prompt_id]

    def types(self, prompt_id: str) -> list[str]:
        return [m["type"] for m in self.of(prompt_id)]

    def wait_end(self, prompt_id: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.of(prompt_id)
            if seen and seen[-1]["type"] == "executing" and seen[-1]["data"]["node"] is None:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"no end for {prompt_id}: {self.types(prompt_id)}")

    def close(self) -> None:
        self.socket.close()


def _queue(server: Server, graph: dict[str, Any], client_id: str, **extra: Any) -> httpx.Response:
    return server.http.post("/prompt", json={"prompt": graph, "client_id": client_id, **extra})


def _images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        image
        for m in messages
        if m["type"] == "executed"
        for image in (m["data"]["output"] or {}).get("images", [])
    ]


def test_a_prompt_reports_on_the_socket_in_comfyuis_order_and_its_image_is_viewable(
    server: Server,
) -> None:
    listener = Listener(server)
    try:
        assert listener.first["type"] == "status"
        assert listener.first["data"]["sid"] == listener.client_id
        assert "queue_remaining" in listener.first["data"]["status"]["exec_info"]
        answer = _queue(server, model_free_graph(_seed(), "order"), listener.client_id)
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"prompt_id", "number", "node_errors"}
        assert body["node_errors"] == {}
        prompt_id = body["prompt_id"]
        messages = listener.wait_end(prompt_id)
        # History is written before the last message goes out.
        history = server.http.get(f"/history/{prompt_id}").json()
    finally:
        listener.close()
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "execution_start"
    assert kinds[-2:] == ["execution_success", "executing"]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing[:3] == ["1", "2", "3"] and executing[-1] is None
    assert "progress_state" in kinds
    assert kinds.index("executed") < kinds.index("execution_success")
    (image,) = _images(messages)
    assert image["type"] == "output"
    viewed = server.http.get("/view", params=image)
    assert viewed.status_code == 200
    assert viewed.headers["content-type"] == "image/png"
    assert png_size(viewed.content) == (32, 32)
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["outputs"]["3"]["images"] == [image]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][4] == ["3"]
    job = server.job(prompt_id)  # the same prompt is a fleet job
    assert job["status"] == "succeeded"


def test_a_socket_opened_after_the_submit_still_gets_the_end(server: Server) -> None:
    client_id = uuid.uuid4().hex
    prompt_id = _queue(server, sleep_graph(1.5, _seed()), client_id).json()["prompt_id"]
    time.sleep(0.3)
    listener = Listener(server, client_id)
    try:
        messages = listener.wait_end(prompt_id)
    finally:
        listener.close()
    assert [m["type"] for m in messages][-2:] == ["execution_success", "executing"]
    assert len(_images(messages)) == 1


def test_polling_history_alone_is_enough(server: Server) -> None:
    prompt_id = str(uuid.uuid4())
    answer = server.http.post(
        "/api/prompt", json={"prompt": model_free_graph(_seed(), "poll"), "prompt_id": prompt_id}
    )
    assert answer.json()["prompt_id"] == prompt_id
    assert server.http.get(f"/history/{uuid.uuid4()}").json() == {}
    deadline = time.monotonic() + 60
    while not (history := server.http.get(f"/api/history/{prompt_id}").json()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (image,) = history[prompt_id]["outputs"]["3"]["images"]
    assert png_size(server.http.get("/api/view", params=image).content) == (32, 32)
    listed = server.http.get("/history", params={"max_items": 5}).json()
    assert prompt_id in listed and len(listed) <= 5


def test_an_uploaded_image_is_read_by_load_image(server: Server) -> None:
    source = server.http.post("/prompt", json={"prompt": model_free_graph(_seed(), "src")})
    prompt_id = source.json()["prompt_id"]
    server.wait_all([prompt_id], 60)
    (image,) = server.http.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["3"]["images"]
    png = server.http.get("/view", params=image).content
    uploaded = server.http.post(
        "/upload/image",
        files={"image": ("mine.png", png, "image/png")},
        data={"overwrite": "true", "type": "input"},
    )
    assert uploaded.status_code == 200
    ref = uploaded.json()
    assert ref["type"] == "input" and ref["name"].endswith(".png")
    assert (
        server.http.get(
            "/view",
            params={"filename": ref["name"], "subfolder": ref["subfolder"], "type": "input"},
        ).content
        == png
    )
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"{ref['subfolder']}/{ref['name']}"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "up"}},
    }
    loaded = server.http.post("/prompt", json={"prompt": graph}).json()["prompt_id"]
    (job,) = server.wait_all([loaded], 60)
    assert job["status"] == "succeeded", job["error"]
    (out,) = server.http.get(f"/history/{loaded}").json()[loaded]["outputs"]["3"]["images"]
    assert png_size(server.http.get("/view", params=out).content) == (32, 32)


def test_a_burst_from_one_client_spreads_over_both_instances_in_order(server: Server) -> None:
    _both_idle(server)
    listener = Listener(server)
    try:
        seed = _seed()
        ids = [
            _queue(server, sleep_graph(0.3, seed + n), listener.client_id).json()["prompt_id"]
            for n in range(20)
        ]
        ended = {i: listener.wait_end(i, timeout=120) for i in ids}
    finally:
        listener.close()
    for messages in ended.values():
        kinds = [m["type"] for m in messages]
        assert kinds.count("execution_start") == 1, kinds
        assert kinds[0] == "execution_start" and kinds[-2:] == ["execution_success", "executing"]
        assert kinds.index("executed") < kinds.index("execution_success")
    instances = {server.job(i)["instance"] for i in ids}
    assert instances == {0, 1}


def _both_idle(server: Server, timeout: float = 120) -> None:
    """Wait until both instances serve with every slot free (an instance restarted by the test
    before may still be starting, and then one instance would take both prompts)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = server.http.get("/v1/instances").json()["instances"]
        if len(listed) == 2 and all(i["state"] == "ready" and i["free_slots"] == 2 for i in listed):
            return
        assert time.monotonic() < deadline, listed
        time.sleep(0.1)


def _instance_of(server: Server, prompt_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (job := server.job(prompt_id))["status"] != "running" or job["instance"] is None:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return int(job["instance"])


def test_kill_9_of_the_running_instance_still_ends_in_success_on_the_socket(
    server: Server,
) -> None:
    listener = Listener(server)
    try:
        prompt_id = _queue(server, sleep_graph(4.0, _seed()), listener.client_id).json()[
            "prompt_id"
        ]
        index = _instance_of(server, prompt_id)
        time.sleep(0.8)  # inside ComfyUI, sleeping
        (record,) = [
            i for i in server.http.get("/v1/instances").json()["instances"] if i["index"] == index
        ]
        os.kill(record["pid"], signal.SIGKILL)
        messages = listener.wait_end(prompt_id, timeout=180)
    finally:
        listener.close()
    kinds = [m["type"] for m in messages]
    assert kinds[-2:] == ["execution_success", "executing"]
    assert "execution_error" not in kinds
    assert len(_images(messages)) >= 1
    assert server.job(prompt_id)["attempts"] == 2
    # Let the killed instance come back before the next test.
    deadline = time.monotonic() + 120
    while server.http.get("/ready").json()["instances_serving"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_interrupting_one_prompt_leaves_the_other_running(server: Server) -> None:
    _both_idle(server)
    listener = Listener(server)
    try:
        seed = _seed()
        first = _queue(server, sleep_graph(5.0, seed), listener.client_id).json()["prompt_id"]
        # Sent at once, while the first may still be being submitted to its instance: it goes
        # to the idle instance, never into the first one's second slot.
        second = _queue(server, sleep_graph(1.5, seed + 1), listener.client_id).json()["prompt_id"]
        assert {_instance_of(server, first), _instance_of(server, second)} == {0, 1}
        time.sleep(0.3)
        assert server.http.post("/interrupt", json={"prompt_id": first}).status_code == 200
        stopped = listener.wait_end(first)
        finished = listener.wait_end(second)
    finally:
        listener.close()
    assert stopped[-2]["type"] == "execution_interrupted"
    assert finished[-2]["type"] == "execution_success"
    assert server.job(first)["status"] == "cancelled"


def test_a_graph_comfyui_would_refuse_gets_comfyuis_400(server: Server) -> None:
    unknown = server.http.post(
        "/prompt", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["type"] == "invalid_prompt"
    graph = model_free_graph(_seed())
    del graph["1"]["inputs"]["width"]
    graph["1"]["inputs"]["height"] = -5
    missing = server.http.post("/prompt", json={"prompt": graph})
    assert missing.status_code == 400
    body = missing.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = {e["type"]: e for e in body["node_errors"]["1"]["errors"]}
    assert errors["required_input_missing"]["extra_info"]["input_name"] == "width"
    assert "value_smaller_than_min" in errors
    assert body["node_errors"]["1"]["class_type"] == "EmptyImage"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["3"]
    no_outputs = server.http.post(
        "/prompt", json={"prompt": {"1": model_free_graph(1)["1"]}}
    ).json()
    assert no_outputs["error"]["type"] == "prompt_no_outputs"


def test_the_same_prompt_id_twice_runs_once(server: Server) -> None:
    prompt_id = str(uuid.uuid4())
    graph = model_free_graph(_seed(), "twice")
    first = server.http.post("/prompt", json={"prompt": graph, "prompt_id": prompt_id})
    again = server.http.post("/prompt", json={"prompt": graph, "prompt_id": prompt_id})
    assert first.json() == again.json()
    other = server.http.post(
        "/prompt", json={"prompt": model_free_graph(_seed(), "other"), "prompt_id": prompt_id}
    )
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "prompt_id_conflict"
    server.wait_all([prompt_id], 60)
    assert server.job(prompt_id)["attempts"] == 1


def test_view_refuses_paths_that_leave_their_folder(server: Server) -> None:
    for params in (
        {"filename": "../comfyfleet.yaml", "type": "output"},
        {"filename": "x.png", "subfolder": "../..", "type": "output"},
        {"filename": "/etc/passwd", "type": "input"},
        {"filename": "x.png", "type": "secrets"},
    ):
        answer = server.http.get("/view", params=params)
        assert answer.status_code == 400, params
    assert server.http.get("/view", params={"filename": "missing.png"}).status_code == 404


def test_fleet_views_describe_every_instance(server: Server) -> None:
    info = server.http.get("/object_info").json()
    assert info["SaveImage"]["output_node"] is True and "FleetSleep" in info
    assert server.http.get("/object_info/EmptyImage").json()["EmptyImage"]["name"] == "EmptyImage"
    stats = server.http.get("/system_stats").json()
    assert len(stats["devices"]) == 2
    assert {d["instance"] for d in stats["devices"]} == {0, 1}
    assert stats["system"]["comfyui_version"] != "unknown"
    queue = server.http.get("/api/queue").json()
    assert set(queue) == {"queue_running", "queue_pending"}
    assert server.http.get("/models").status_code == 200


def test_the_jobs_api_lists_reads_and_cancels_idempotently(server: Server) -> None:
    prompt_id = server.http.post("/prompt", json={"prompt": sleep_graph(5.0, _seed())}).json()[
        "prompt_id"
    ]
    _instance_of(server, prompt_id)
    running = server.http.get("/api/jobs", params={"status": "in_progress"}).json()
    assert prompt_id in [j["id"] for j in running["jobs"]]
    assert running["pagination"]["total"] >= 1
    assert server.http.get(f"/api/jobs/{prompt_id}").json()["status"] == "in_progress"
    first = server.http.post(f"/api/jobs/{prompt_id}/cancel")
    assert (first.status_code, first.json()) == (200, {"cancelled": True})
    server.wait_all([prompt_id], 60)
    assert server.http.get(f"/api/jobs/{prompt_id}").json()["status"] == "cancelled"
    again = server.http.post(f"/api/jobs/{prompt_id}/cancel")
    assert (again.status_code, again.json()) == (200, {"cancelled": False})
    unknown = server.http.post("/api/jobs/no-such-job/cancel")
    assert (unknown.status_code, unknown.json()) == (200, {"cancelled": False})
    bad = server.http.get("/api/jobs", params={"status": "nope"})
    assert bad.status_code == 400


def test_the_jobs_api_cancels_a_batch(server: Server) -> None:
    running = server.http.post("/prompt", json={"prompt": sleep_graph(5.0, _seed())}).json()
    waiting = server.http.post("/prompt", json={"prompt": sleep_graph(5.0, _seed())}).json()
    ids = [running["prompt_id"], waiting["prompt_id"], "no-such-job"]
    answer = server.http.post("/api/jobs/cancel", json={"job_ids": ids})
    assert (answer.status_code, answer.json()) == (200, {"cancelled": True})
    server.wait_all(ids[:2], 60)
    assert [server.http.get(f"/api/jobs/{i}").json()["status"] for i in ids[:2]] == [
        "cancelled",
        "cancelled",
    ]
    again = server.http.post("/api/jobs/cancel", json={"job_ids": ids})
    assert again.json() == {"cancelled": False}
    for body in ({"job_ids": "x"}, {"job_ids": [1]}, {}):
        refused = server.http.post("/api/jobs/cancel", json=body)
        assert refused.status_code == 400, body


def test_a_mask_upload_puts_the_mask_into_the_original_image(server: Server) -> None:
    from PIL import Image

    original, mask = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (20, 10), (200, 10, 10)).save(original, format="PNG")
    Image.new("RGBA", (20, 10), (0, 0, 0, 77)).save(mask, format="PNG")
    ref = server.http.post(
        "/upload/image", files={"image": ("photo.png", original.getvalue(), "image/png")}
    ).json()
    original_ref = {"filename": ref["name"], "subfolder": ref["subfolder"], "type": "input"}
    masked = server.http.post(
        "/upload/mask",
        files={"image": ("mask.png", mask.getvalue(), "image/png")},
        data={"original_ref": json.dumps(original_ref), "type": "input"},
    )
    assert masked.status_code == 200
    answer = masked.json()
    view = {"filename": answer["name"], "subfolder": answer["subfolder"], "type": "input"}
    merged = Image.open(io.BytesIO(server.http.get("/view", params=view).content))
    assert merged.size == (20, 10) and merged.mode == "RGBA"
    assert merged.getpixel((3, 3)) == (200, 10, 10, 77)


@pytest.mark.parametrize("metadata", [False, True], ids=["legacy", "with-metadata"])
def test_a_sampler_sends_preview_frames_to_its_client(server: Server, metadata: bool) -> None:
    """Binary frames as ComfyUI frames them: `type 1, image type, JPEG` for every client, or
    `type 4, header length, JSON header, image` for one that announced preview metadata."""
    flags = {"supports_preview_metadata": True} if metadata else None
    listener = Listener(server, flags=flags)
    try:
        graph = tiny_sd15_graph(CHECKPOINT_NAME, seed=_seed(), steps=3, prefix="previews")
        prompt_id = _queue(server, graph, listener.client_id).json()["prompt_id"]
        messages = listener.wait_end(prompt_id, timeout=120)
    finally:
        listener.close()
    assert messages[-2]["type"] == "execution_success"
    assert listener.binary, "no preview frame arrived"
    for frame in listener.binary:
        kind, second = struct.unpack(">II", frame[:8])
        if metadata:
            assert kind == 4
            header = json.loads(frame[8 : 8 + second])
            assert header["prompt_id"] == prompt_id and header["node_id"] == KSAMPLER_NODE
            assert header["image_type"] == "image/jpeg"
            image = frame[8 + second :]
        else:
            assert (kind, second) == (1, 1)  # a preview image, JPEG
            image = frame[8:]
        assert image[:3] == b"\xff\xd8\xff"
