"""The Python client against a real fleet (`comfyfleet serve`, a CPU ComfyUI), one suite for
both surfaces: each test runs with `Client` and with `AsyncClient` (see conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfyfleet.client import (
    ApiError,
    AsyncClient,
    Event,
    JobCancelled,
    JobFailed,
    Timeout,
    WebhookVerificationError,
    verify_webhook,
)
from tests.comfyui_env import free_port_block
from tests.integration.client.conftest import Connect, Fleet
from tests.integration.serve import model_free_graph, png_size, sleep_graph

pytestmark = pytest.mark.comfyui


def _seed() -> int:
    return time.time_ns() % 1_000_000_007


def _rgb(color: int) -> tuple[int, int, int]:
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


def _inverted(color: int) -> tuple[int, int, int]:
    red, green, blue = _rgb(color)
    return 255 - red, 255 - green, 255 - blue


def _near(pixel: Any, expected: tuple[int, int, int]) -> bool:
    """ComfyUI works in floats and truncates when it saves: a channel may be one off."""
    return all(abs(e - p) <= 1 for p, e in zip(pixel, expected, strict=True))


def _load_graph(image: str, prefix: str = "loaded") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


# --- run ----------------------------------------------------------------------------------


def test_run_returns_the_image_as_bytes_a_file_and_a_pil_image(client: Any, tmp_path: Path) -> None:
    seed = _seed()
    events: list[Event] = []
    result = client.run(model_free_graph(seed, "run"), on_progress=events.append)
    [output] = result.files
    assert (output.node, output.kind, output.content_type) == ("3", "images", "image/png")
    data = output.bytes()
    assert hashlib.sha256(data).hexdigest() == output.sha256 and len(data) == output.size
    assert _near(output.image().getpixel((0, 0)), _inverted(seed % 0xFFFFFF))
    saved = output.save(tmp_path)
    assert saved == tmp_path / output.name and saved.read_bytes() == data
    assert result.job.status == "succeeded" and result.id == result.job.id
    assert events[-1].type == "status" and events[-1].data["status"] == "succeeded"
    assert "executing" in {e.type for e in events}


def test_run_reads_a_json_file_and_sets_inputs_from_params(client: Any, tmp_path: Path) -> None:
    file = tmp_path / "flow.json"
    file.write_text(json.dumps(model_free_graph(_seed(), "file")), encoding="utf-8")
    result = client.run(str(file), params={"1.width": 48, "1.height": 40})
    assert png_size(result.files[0].bytes()) == (48, 40)
    assert client.run(file, {"1.width": 16}).images()[0].size == (16, 32)


def test_a_graph_the_server_refuses_is_an_api_error_naming_the_node(client: Any) -> None:
    unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(ApiError) as caught:
        client.run(unknown)
    assert (caught.value.status, caught.value.code, caught.value.node_id) == (
        400,
        "invalid_workflow",
        "1",
    )
    assert "NoSuchNode" in caught.value.message
    dangling = model_free_graph(1) | {
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}}
    }
    with pytest.raises(ApiError) as caught:
        client.validate(dangling)
    assert (caught.value.node_id, caught.value.details["input"]) == ("2", "image")
    assert client.validate(model_free_graph(1)) == {"valid": True, "nodes": 3, "options": {}}


def test_a_node_that_raises_is_job_failed_with_node_class_and_traceback(client: Any) -> None:
    seed = _seed()
    graph = {"1": {"class_type": "FleetFail", "inputs": {"message": f"boom {seed}", "seed": seed}}}
    with pytest.raises(JobFailed) as caught:
        client.run(graph)
    failure = caught.value
    assert isinstance(failure, ApiError)
    assert (failure.node_id, failure.class_type, failure.exception_type) == (
        "1",
        "FleetFail",
        "RuntimeError",
    )
    assert failure.code == "node_error" and f"boom {seed}" in failure.message
    assert failure.job.status == "failed" and failure.job.id == failure.job_id
    assert any("raise RuntimeError(message)" in line for line in failure.traceback)
    assert not any("/root" in line or "/tmp" in line for line in failure.traceback)


def test_a_run_past_its_timeout_raises_timeout_and_the_job_goes_on(client: Any) -> None:
    began = time.monotonic()
    with pytest.raises(Timeout) as caught:
        client.run(sleep_graph(60, _seed()), timeout=2)
    assert time.monotonic() - began < 15
    assert isinstance(caught.value, TimeoutError)
    job = client.job(caught.value.job_id)
    assert job.status().status in ("queued", "running")
    job.cancel()
    with pytest.raises(JobCancelled):
        job.wait(timeout=60)


# --- submit, status, events, cancel ----------------------------------------------------------


def test_submit_then_status_events_and_wait(client: Any) -> None:
    job = client.submit(sleep_graph(0.5, _seed()), priority=2)
    assert job.status().priority == 2
    events = list(job.events())
    types = [e.type for e in events]
    assert types[-1] == "status" and events[-1].final
    assert "started" in types and "executing" in types
    result = job.wait()
    assert result.texts == ["slept 0.5s"]
    assert types.count("output") == len(result.outputs)
    first_output = types.index("output")
    rest = list(job.events(after=events[first_output].id))  # resumes inside the final group
    assert [(e.type, e.id, e.data) for e in rest] == [
        (e.type, e.id, e.data) for e in events[first_output + 1 :]
    ]
    assert list(job.events(after=events[-1].id)) == []


def test_cancel_stops_a_running_job(client: Any) -> None:
    job = client.submit(sleep_graph(60, _seed()))
    for event in job.events():
        if event.type == "started":
            break
    began = time.monotonic()
    record = job.cancel()
    assert record.id == job.id and record.cancel_requested
    with pytest.raises(JobCancelled) as caught:
        job.wait(timeout=60)
    assert caught.value.job.status == "cancelled"
    assert time.monotonic() - began < 30


def test_jobs_lists_the_keys_own_jobs_newest_first(client: Any) -> None:
    newest = client.submit(model_free_graph(_seed(), "listed"))
    newest.wait()
    listed = [job.id for job in client.jobs(page_size=2)]
    assert listed[0] == newest.id
    assert len(listed) == len(set(listed)) > 2  # several pages, nothing twice
    assert all(j.status == "succeeded" for j in client.jobs(status="succeeded"))


def test_a_submit_whose_answer_was_lost_runs_once(
    connect: Connect, client: Any, fleet: Fleet
) -> None:
    with LosingProxy(fleet.url) as proxy:
        proxied = connect(proxy.url, api_key=fleet.keys["user"])
        job = proxied.submit(model_free_graph(_seed(), "lost"))
    first, second = proxy.answers
    assert first["id"] == second["id"] == job.id  # the retry got the job the first try made
    assert proxy.replayed == [None, "true"]
    assert client.job(job.id).wait().files[0].name.startswith("lost")


# --- files ----------------------------------------------------------------------------------


def test_an_uploaded_image_reaches_load_image(client: Any, tmp_path: Path) -> None:
    color = _seed() % 0xFFFFFF
    source = client.run(model_free_graph(color, "source")).files[0].bytes()  # inverted colour
    asset = client.upload(source, filename="in.png")
    assert (asset.content_type, asset.sha256) == ("image/png", hashlib.sha256(source).hexdigest())
    assert client.asset(asset.id) == asset
    back = client.run(_load_graph(asset.ref)).files[0].image()
    assert _near(back.getpixel((0, 0)), _rgb(color))  # inverted twice
    path = tmp_path / "again.png"
    path.write_bytes(source)
    by_path = client.run(_load_graph("placeholder.png"), params={"1.image": path})
    assert _near(by_path.files[0].image().getpixel((0, 0)), _rgb(color))


# --- templates --------------------------------------------------------------------------------


@pytest.fixture
def templates(fleet: Fleet) -> None:
    if not fleet.has_templates:
        pytest.skip("this server has no /v1/templates routes yet (built on the templates branch)")


@pytest.mark.usefixtures("templates")
def test_templates_are_listed_with_their_parameters(client: Any) -> None:
    listed = {t.name: t for t in client.templates()}
    blank = listed["client-blank"]
    assert set(blank.parameters["properties"]) == {"width", "height", "color"}
    assert listed["client-invert"].required == ["image"]
    one = client.template("client-invert")
    assert one.description == "The negative of an image" and one.missing_models == []
    with pytest.raises(ApiError) as caught:
        client.template("no-such-template")
    assert (caught.value.status, caught.value.code) == (404, "template_not_found")


@pytest.mark.usefixtures("templates")
def test_a_template_runs_by_name_with_params(client: Any) -> None:
    result = client.run("client-blank", params={"width": 40, "height": 24, "color": 0x102030})
    image = result.files[0].image()
    assert image.size == (40, 24) and _near(image.getpixel((0, 0)), (0x10, 0x20, 0x30))
    with pytest.raises(ApiError) as caught:
        client.run("client-blank", params={"width": 41})
    error = caught.value
    assert (error.status, error.code, error.details["parameter"]) == (
        422,
        "invalid_parameter",
        "width",
    )
    with pytest.raises(ApiError) as caught:
        client.run("client-blank", params={"depth": 1})
    assert {"width", "height", "color"} <= set(caught.value.details["known"])


@pytest.mark.usefixtures("templates")
def test_an_image_parameter_takes_a_file_uploaded_on_the_way(client: Any, tmp_path: Path) -> None:
    color = _seed() % 0xFFFFFF
    path = tmp_path / "in.png"
    Image.new("RGB", (8, 8), _rgb(color)).save(path)
    result = client.run("client-invert", params={"image": path})
    assert _near(result.files[0].image().getpixel((0, 0)), _inverted(color))


# --- models -----------------------------------------------------------------------------------


def test_a_preset_installs_as_a_job_and_its_files_are_listed(
    admin: Any, fleet: Fleet, surface: str
) -> None:
    name = fleet.presets[surface]
    presets = {p.name: p for p in admin.presets()}
    assert {"sd15", name} <= set(presets)
    assert presets[name].complete is False
    admin.install_preset(name).wait(timeout=120)
    assert {p.name: p for p in admin.presets()}[name].complete is True
    files = {m.name for m in admin.models("loras")}
    assert f"{name}.safetensors" in files


# --- keys -------------------------------------------------------------------------------------


def test_keys_decide_who_may_do_what(connect: Connect, client: Any, fleet: Fleet) -> None:
    mine = client.submit(model_free_graph(_seed(), "keys"))
    nobody = connect(fleet.url)
    with pytest.raises(ApiError) as caught:
        nobody.job(mine.id).status()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    reader = connect(fleet.url, api_key=fleet.keys["reader"])
    with pytest.raises(ApiError) as caught:
        reader.submit(model_free_graph(1))
    assert (caught.value.status, caught.value.code) == (403, "forbidden")
    assert caught.value.details["needs"] == "submit"
    other = connect(fleet.url, api_key=fleet.keys["other"])
    with pytest.raises(ApiError) as caught:
        other.job(mine.id).status()
    assert (caught.value.status, caught.value.code) == (404, "job_not_found")
    admin = connect(fleet.url, api_key=fleet.keys["admin"])
    assert admin.job(mine.id).wait().id == mine.id


# --- webhooks ---------------------------------------------------------------------------------


def test_a_real_delivery_verifies_and_a_changed_one_does_not(client: Any, fleet: Fleet) -> None:
    with WebhookReceiver() as receiver:
        result = client.run(
            model_free_graph(_seed(), "hooked"),
            webhook={"url": receiver.url, "events": ["job.succeeded"]},
        )
        headers, body = receiver.next(timeout=30)
    event = verify_webhook(fleet.secret, headers, body)
    assert (event.type, event.data["id"]) == ("job.succeeded", result.id)
    assert event.id == headers["webhook-id"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(
            fleet.secret, headers, body.replace(result.id.encode(), b"x" * len(result.id))
        )
    with pytest.raises(WebhookVerificationError):
        verify_webhook("whsec_" + "b3RoZXItc2VjcmV0", headers, body)


# --- the async surface's own ways -------------------------------------------------------------


def test_async_runs_share_one_client_and_await_coroutine_callbacks(fleet: Fleet) -> None:
    async def main() -> tuple[list[Any], list[str], list[str]]:
        seen: list[str] = []

        async def note(event: Event) -> None:
            await asyncio.sleep(0)
            seen.append(event.job_id)

        async with AsyncClient(fleet.url, api_key=fleet.keys["user"]) as client:
            graphs = [model_free_graph(_seed() + n, f"gathered{n}") for n in range(3)]
            results = await asyncio.gather(*(client.run(g, on_progress=note) for g in graphs))
            job = await client.submit(sleep_graph(0.2, _seed()))
            early: list[str] = []
            async with contextlib.aclosing(job.events()) as events:
                async for event in events:
                    early.append(event.type)
                    if event.type == "started":
                        break
            await job.wait()
        return results, seen, early

    results, seen, early = asyncio.run(main())
    assert len({r.id for r in results}) == 3
    assert set(seen) == {r.id for r in results}  # each run's events went to its own callback
    assert all(r.files[0].name.startswith(f"gathered{n}") for n, r in enumerate(results))
    assert early[-1] == "started"


# --- helpers: real servers in threads ---------------------------------------------------------


class _Threaded:
    """A `ThreadingHTTPServer` on a free loopback port, served from a thread while entered."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.port = free_port_block(1)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)

    def __enter__(self) -> Any:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class WebhookReceiver(_Threaded):
    """An HTTP endpoint that keeps each delivery's headers and raw body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(Quiet):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._arrived:
                    receiver.received.append((headers, body))
                    receiver._arrived.notify_all()
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def next(self, timeout: float) -> tuple[dict[str, str], bytes]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: self.received, timeout), "no webhook arrived"
            return self.received.pop(0)


class LosingProxy(_Threaded):
    """Forwards requests to the server, but drops the connection instead of answering the
    first job submission: the server made the job, the client never heard."""

    def __init__(self, upstream: str) -> None:
        self.answers: list[dict[str, Any]] = []
        self.replayed: list[str | None] = []
        proxy = self
        forward = httpx.Client(base_url=upstream, trust_env=False, timeout=60)
        self._forward = forward

        class Handler(Quiet):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = forward.post(self.path, content=body, headers=headers)
                if self.path.startswith("/v1/jobs") and answer.status_code < 300:
                    proxy.answers.append(answer.json())
                    proxy.replayed.append(answer.headers.get("idempotent-replayed"))
                    if len(proxy.answers) == 1:
                        self.close_connection = True  # no answer at all: the connection drops
                        return
                self.send_response(answer.status_code)
                for name in ("content-type", "idempotent-replayed"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._forward.close()
