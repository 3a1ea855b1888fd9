"""The OpenAI images facade in front of a job store alone: a stand-in dispatcher ends each job
as it is enqueued (writing a PNG where ComfyUI would), so every answer, mapping and refusal is
checked without ComfyUI. The real thing (ComfyUI, the `openai` package, Open WebUI's requests)
is tests/integration/test_openai_images.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from comfyfleet.assets import AssetStore
from comfyfleet.auth import KeyStore
from comfyfleet.facades.openai import (
    OpenAIImages,
    OpenAISettings,
    openai_edge,
    openai_images,
    openai_router,
)
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.jobs import Job, JobOutput, JobStatus, MemoryJobStore, MemoryRegistry, NewJob
from comfyfleet.templates import TemplateFileError, TemplateLibrary, parse_text

PREFIX = "/openai/v1"
GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "StringConstant", "inputs": {"string": "a cat"}},
    "3": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
    "4": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
SIZE = {"type": "integer", "default": 64, "minimum": 32, "maximum": 256, "multiple_of": 8}
DRAW: dict[str, Any] = {
    "parameters": {
        "prompt": {"type": "text", "default": "a cat", "sets": ["2.string"]},
        "width": {**SIZE, "sets": ["1.width"]},
        "height": {**SIZE, "sets": ["1.height"]},
        "batch": {
            "type": "integer",
            "default": 1,
            "minimum": 1,
            "maximum": 4,
            "sets": ["1.batch_size"],
        },
        "seed": {
            "type": "integer",
            "default": "random",
            "minimum": 0,
            "maximum": 2**32,
            "sets": ["1.color"],
        },
        "look": {
            "type": "string",
            "default": "plain",
            "choices": ["plain", "hd"],
            "sets": ["9.filename_prefix"],
        },
    },
    "openai": {"prompt": "prompt", "size": ["width", "height"], "n": "batch", "quality": "look"},
    "workflow": GRAPH,
}
ALONE: dict[str, Any] = {  # no n, no size: n jobs of a fixed size
    "parameters": {
        "prompt": {"type": "text", "sets": ["2.string"]},
        "seed": {
            "type": "integer",
            "default": "random",
            "minimum": 0,
            "maximum": 2**32,
            "sets": ["1.color"],
        },
    },
    "openai": {"prompt": "prompt"},
    "workflow": GRAPH,
}
EDIT: dict[str, Any] = {
    "parameters": {
        "prompt": {"type": "text", "sets": ["2.string"]},
        "image": {"type": "image", "sets": ["3.image"]},
        "mask": {"type": "image", "required": False, "sets": ["4.image"]},
    },
    "openai": {"prompt": "prompt", "image": "image", "mask": "mask"},
    "workflow": GRAPH,
}
PLAIN: dict[str, Any] = {"parameters": {}, "workflow": GRAPH}  # no openai block: no model


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def png(width: int, height: int) -> bytes:
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


class _Known:
    async def known(self, wanted: set[str]) -> frozenset[str]:
        return frozenset(wanted)

    def free_text(self, class_type: str, input_name: str) -> bool:
        return input_name in ("text", "string")


class Gateway:
    """The app as `serve` composes it (edge, keys, routes), over a memory store whose jobs a
    stand-in dispatcher ends at once: `outcome` says how (default: one PNG per batch item, of
    the graph's size)."""

    def __init__(self, tmp_path: Path, *, keys: KeyStore | None = None, **serve: Any) -> None:
        folder = tmp_path / "templates"
        folder.mkdir(exist_ok=True)
        for name, doc in (("draw", DRAW), ("alone", ALONE), ("edit", EDIT), ("plain", PLAIN)):
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.service = Service(
            store=MemoryJobStore(),
            output_dir=tmp_path / "out",
            settings=ServeSettings(**serve),  # type: ignore[call-arg]
            registry=MemoryRegistry(),
        )
        self.service.node_types = _Known()  # type: ignore[assignment]
        self.outcome: Callable[[Job], Any] | None = self._images
        self.service.dispatch = self._dispatch
        self.assets = AssetStore(tmp_path / "input")
        self.images: OpenAIImages = openai_images(
            self.service,
            TemplateLibrary.for_workspace(tmp_path),
            self.assets,
            OpenAISettings(max_images=3),  # type: ignore[call-arg]
            secret=b"s" * 32,
            max_upload_bytes=1024 * 1024,
        )
        app = create_app(self.service, routers=(openai_router(self.images),), keys=keys)
        self.app = openai_edge(app, self.images, self.service.output_dir)

    async def _dispatch(self) -> None:
        if self.outcome is None:
            return
        store = self.service.store
        job = await store.claim("w1", instance=0, lease_s=30)
        assert job is not None
        result = self.outcome(job)
        if isinstance(result, dict):
            await store.fail(job.id, "w1", result, retryable=False)
        else:
            await store.complete(job.id, "w1", [JobOutput.from_json(o) for o in result])

    def _images(self, job: Job) -> list[dict[str, Any]]:
        node = job.workflow["1"]["inputs"]
        folder = self.service.output_dir / job.id
        folder.mkdir(parents=True)
        outputs = []
        for index in range(node["batch_size"]):
            name = f"t_{index:05}_.png"
            (folder / name).write_bytes(png(node["width"], node["height"]))
            outputs.append(
                {
                    "node_id": "9",
                    "kind": "images",
                    "filename": name,
                    "subfolder": job.id,
                    "type": "output",
                    "path": name,
                    "url": f"/v1/outputs/{job.id}/{name}",
                    "content_type": "image/png",
                }
            )
        return outputs

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
                return await c.request(method, url, **kwargs)

        return run(go())

    def generate(self, **body: Any) -> httpx.Response:
        return self.call("POST", f"{PREFIX}/images/generations", json=body)

    def jobs(self) -> list[Job]:
        return run(self.service.store.list_jobs(limit=100))[0]  # type: ignore[no-any-return]


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def _error(answer: httpx.Response) -> dict[str, Any]:
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]  # type: ignore[no-any-return]


def _size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- models -----------------------------------------------------------------------------------


def test_the_models_are_the_templates_with_an_openai_block(gw: Gateway) -> None:
    answer = gw.call("GET", f"{PREFIX}/models")
    assert answer.status_code == 200, answer.text
    listed = {m["id"]: m for m in answer.json()["data"]}
    assert answer.json()["object"] == "list"
    assert {"draw", "alone", "edit", "txt2img", "inpaint"} <= set(listed)
    assert "plain" not in listed and "upscale" not in listed
    assert listed["draw"]["object"] == "model" and listed["draw"]["owned_by"] == "comfyfleet"
    assert listed["draw"]["created"] > 1_600_000_000  # the file's time
    one = gw.call("GET", f"{PREFIX}/models/draw")
    assert one.json() == listed["draw"]


def test_an_unknown_model_is_a_404_model_not_found_listing_the_models(gw: Gateway) -> None:
    answer = gw.generate(model="dall-e-3", prompt="a cat")
    assert answer.status_code == 404
    error = _error(answer)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    assert error["message"].startswith("The model 'dall-e-3' does not exist (models: alone, ")
    assert "draw" in error["message"] and "plain" not in error["message"]
    assert gw.call("GET", f"{PREFIX}/models/plain").status_code == 404
    assert gw.jobs() == []


# --- generations ------------------------------------------------------------------------------


def test_b64_json_gives_n_pngs_of_the_size_from_one_batch_job(gw: Gateway) -> None:
    answer = gw.generate(
        model="draw", prompt="a red fox", size="96x48", n=3, response_format="b64_json"
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [_size(base64.b64decode(d["b64_json"])) for d in body["data"]] == [(96, 48)] * 3
    assert body["output_format"] == "png" and isinstance(body["created"], int)
    (job,) = gw.jobs()
    assert job.workflow["1"]["inputs"] | {"color": 0} == {
        "width": 96,
        "height": 48,
        "batch_size": 3,
        "color": 0,
    }
    assert job.workflow["2"]["inputs"]["string"] == "a red fox"
    record = job.options.template
    assert record["name"] == "draw" and record["params"]["batch"] == 3
    assert job.options.openai == {"endpoint": "images/generations"}


def test_a_template_without_n_runs_n_jobs_each_with_its_own_seed(gw: Gateway) -> None:
    answer = gw.generate(model="alone", prompt="a cat", n=3, user="u-42")
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 3
    jobs = gw.jobs()
    assert len(jobs) == 3
    assert len({j.workflow["1"]["inputs"]["color"] for j in jobs}) == 3
    assert all(j.options.openai["user"] == "u-42" for j in jobs)
    too_many = gw.generate(model="alone", prompt="a cat", n=4)
    assert too_many.status_code == 400
    assert _error(too_many)["param"] == "n"
    assert "at most 3" in _error(too_many)["message"]


def test_a_mapped_quality_sets_its_parameter_and_an_unmapped_one_changes_nothing(
    gw: Gateway,
) -> None:
    assert gw.generate(model="draw", prompt="x", quality="hd").status_code == 200
    assert gw.generate(model="alone", prompt="x", quality="hd", style="vivid").status_code == 200
    drawn, alone = sorted(gw.jobs(), key=lambda j: j.options.template["name"])[::-1]
    assert drawn.workflow["9"]["inputs"]["filename_prefix"] == "hd"
    assert alone.workflow["9"]["inputs"]["filename_prefix"] == "t"
    refused = gw.generate(model="draw", prompt="x", quality="standard")
    assert _error(refused)["param"] == "quality"
    assert "must be one of plain, hd" in _error(refused)["message"]


def test_url_answers_are_signed_links_that_open_without_a_key(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    token = keys.create("chat").token
    gw = Gateway(tmp_path, keys=keys)
    auth = {"Authorization": f"Bearer {token}"}
    answer = gw.call(
        "POST", f"{PREFIX}/images/generations", json={"model": "draw", "prompt": "x"}, headers=auth
    )
    assert answer.status_code == 200, answer.text
    (item,) = answer.json()["data"]
    url = urlsplit(item["url"])
    assert (url.scheme, url.netloc) == ("http", "gw.test")
    assert url.path.startswith(f"{PREFIX}/images/outputs/")
    opened = gw.call("GET", f"{url.path}?{url.query}")  # no key
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "image/png"
    assert _size(opened.content) == (64, 64)
    tampered = gw.call("GET", f"{url.path}?{url.query[:-2]}xx")
    assert tampered.status_code == 403
    assert _error(tampered)["code"] == "invalid_signature"
    other = url.path.replace("t_00000_", "t_00001_")
    assert gw.call("GET", f"{other}?{url.query}").status_code == 403
    expired = gw.images.links.url("http://gw.test", *url.path.split("/")[-2:], now=0)
    assert _error(gw.call("GET", expired.removeprefix("http://gw.test")))["code"] == "link_expired"


def test_without_a_key_the_401_is_in_openais_shape(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    gw = Gateway(tmp_path, keys=keys)
    answer = gw.generate(model="draw", prompt="x")
    assert answer.status_code == 401
    error = _error(answer)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "Authorization: Bearer" in error["message"]
    wrong = gw.call("GET", f"{PREFIX}/models", headers={"Authorization": "Bearer cf_nope"})
    assert _error(wrong)["code"] == "invalid_api_key"
    # the native API keeps its own shape
    assert set(gw.call("GET", "/v1/jobs").json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize(
    ("body", "param", "code", "message"),
    [
        (
            {"model": "draw"},
            "prompt",
            "missing_required_parameter",
            "Missing required parameter: 'prompt'.",
        ),
        (
            {"model": "draw", "prompt": " "},
            "prompt",
            "invalid_value",
            "'prompt' must be a non-empty string",
        ),
        (
            {"prompt": "x"},
            "model",
            "missing_required_parameter",
            "Missing required parameter: 'model' (this server has no default; models: alone, "
            "batch, batch-sdxl, draw, edit,",
        ),
        (
            {"model": "draw", "prompt": "x", "size": "4096x64"},
            "size",
            "invalid_value",
            "'size' does not suit model 'draw': parameter 'width' must be at most 256 (got 4096)",
        ),
        (
            {"model": "draw", "prompt": "x", "size": "100x64"},
            "size",
            "invalid_value",
            "'size' does not suit model 'draw': parameter 'width' must be a multiple of 8 "
            "(got 100)",
        ),
        (
            {"model": "draw", "prompt": "x", "size": "big"},
            "size",
            "invalid_value",
            "'size' must be WIDTHxHEIGHT, such as 512x512, or auto (got 'big')",
        ),
        (
            {"model": "alone", "prompt": "x", "size": "64x64"},
            "size",
            "invalid_value",
            "model 'alone' makes images of one size",
        ),
        (
            {"model": "draw", "prompt": "x", "n": 5},
            "n",
            "invalid_value",
            "'n' does not suit model 'draw': parameter 'batch' must be at most 4 (got 5)",
        ),
        (
            {"model": "draw", "prompt": "x", "n": 0},
            "n",
            "invalid_value",
            "'n' must be at least 1 (got 0)",
        ),
        (
            {"model": "draw", "prompt": "x", "response_format": "png"},
            "response_format",
            "invalid_value",
            "'response_format' must be url or b64_json (got 'png')",
        ),
        (
            {"model": "draw", "prompt": "x", "steps": 4},
            "steps",
            "invalid_value",
            "Unrecognized request argument supplied: steps",
        ),
        (
            {"model": "draw", "prompt": "x", "output_format": "jpeg"},
            "output_format",
            "invalid_value",
            "output_format 'jpeg' is not supported: the images are PNG",
        ),
        (
            {"model": "draw", "prompt": "x", "stream": True},
            "stream",
            "invalid_value",
            "streaming partial images is not supported",
        ),
        (
            {"model": "edit", "prompt": "x"},
            "model",
            "invalid_value",
            "model 'edit' edits an image: send it to /images/edits",
        ),
    ],
)
def test_bad_requests_are_400s_naming_the_field(
    gw: Gateway, body: dict[str, Any], param: str, code: str, message: str
) -> None:
    answer = gw.generate(**body)
    assert answer.status_code == 400, answer.text
    error = _error(answer)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"].startswith(message), error["message"]
    assert gw.jobs() == []


def test_a_default_model_serves_requests_without_one(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.images = openai_images(
        gw.service,
        gw.images.library,
        gw.assets,
        OpenAISettings(default_model="draw"),  # type: ignore[call-arg]
        secret=b"s" * 32,
        max_upload_bytes=1024,
    )
    gw.app = openai_edge(
        create_app(gw.service, routers=(openai_router(gw.images),)), gw.images, tmp_path
    )
    assert gw.generate(prompt="x").status_code == 200
    assert gw.jobs()[0].options.template["name"] == "draw"


def test_a_full_queue_is_a_429_with_retry_after(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, max_queued=1)
    gw.outcome = None  # nothing runs: the first job stays queued
    run(gw.service.store.enqueue(NewJob(id="filler", workflow=GRAPH)))
    answer = gw.generate(model="alone", prompt="x")
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "5"
    error = _error(answer)
    assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")


def test_the_second_of_n_jobs_refused_cancels_the_first(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, max_queued=1)
    gw.outcome = None
    answer = gw.generate(model="alone", prompt="x", n=2)
    assert answer.status_code == 429
    (job,) = gw.jobs()
    assert job.status == JobStatus.CANCELLED


def test_a_failed_job_is_a_500_naming_the_job_and_why(gw: Gateway) -> None:
    gw.outcome = lambda job: {"code": "node_error", "message": "node 9 (SaveImage): disk full"}
    answer = gw.generate(model="draw", prompt="x")
    assert answer.status_code == 500
    error = _error(answer)
    (job,) = gw.jobs()
    assert (error["type"], error["code"]) == ("server_error", "node_error")
    assert error["message"] == f"model 'draw': job {job.id} failed: node 9 (SaveImage): disk full"


def test_jobs_that_do_not_end_in_time_are_cancelled_and_answered_504(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, max_wait_s=0.2)
    gw.outcome = None
    answer = gw.generate(model="draw", prompt="x")
    assert answer.status_code == 504
    assert _error(answer)["code"] == "timeout"
    assert [j.status for j in gw.jobs()] == [JobStatus.CANCELLED]


# --- edits ------------------------------------------------------------------------------------


def _edit(gw: Gateway, files: list[tuple[str, Any]], **fields: str) -> httpx.Response:
    """A multipart body of `fields` (text parts) and `files`, in that order."""
    parts = [(name, (None, value)) for name, value in fields.items()] + files
    return gw.call("POST", f"{PREFIX}/images/edits", files=parts)


def test_an_edit_stores_the_image_and_mask_and_sets_their_parameters(gw: Gateway) -> None:
    image, mask = png(8, 8), png(8, 4)
    answer = _edit(
        gw,
        [("image", ("a.png", image, "image/png")), ("mask", ("m.png", mask, "image/png"))],
        model="edit",
        prompt="a hat",
        n="2",
        response_format="b64_json",
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 2  # no n parameter: two jobs
    for job in gw.jobs():
        inputs = {k: job.workflow[k]["inputs"]["image"] for k in ("3", "4")}
        assert inputs == {"3": f"asset:{_sha(image)}", "4": f"asset:{_sha(mask)}"}
        assert "image" not in job.options.template["params"]
        assert job.options.openai == {"endpoint": "images/edits"}
    assert gw.assets.path(_sha(image)).read_bytes() == image


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("files", "fields", "param", "message"),
    [
        (
            [],
            {"model": "edit", "prompt": "x", "image": "not a file"},
            "image",
            "'image' must be a file part",
        ),
        (
            [("mask", ("m.png", png(2, 2), "image/png"))],
            {"model": "edit", "prompt": "x"},
            "image",
            "Missing required parameter: 'image'.",
        ),
        (
            [
                ("image[]", ("a.png", png(2, 2), "image/png")),
                ("image[]", ("b.png", png(2, 2), "image/png")),
            ],
            {"model": "edit", "prompt": "x"},
            "image",
            "model 'edit' takes at most 1 image(s) (got 2)",
        ),
        (
            [("image", ("a.png", png(2, 2), "image/png"))],
            {"model": "draw", "prompt": "x"},
            "model",
            "model 'draw' draws from a prompt alone",
        ),
        (
            [("image", ("a.png", b"", "image/png"))],
            {"model": "edit", "prompt": "x"},
            "image",
            "'image': the input is empty",
        ),
        (
            [("image", ("a.png", png(2, 2), "image/png")), ("other", ("o.png", b"x", "image/png"))],
            {"model": "edit", "prompt": "x"},
            "other",
            "Unrecognized request argument supplied: other",
        ),
    ],
)
def test_bad_edits_are_400s_naming_the_field(
    gw: Gateway, files: list[Any], fields: dict[str, str], param: str, message: str
) -> None:
    answer = _edit(gw, files, **fields)
    assert answer.status_code == 400, answer.text
    error = _error(answer)
    assert error["param"] == param
    assert error["message"].startswith(message), error["message"]
    assert gw.jobs() == []


def test_an_edit_body_that_is_not_multipart_is_refused(gw: Gateway) -> None:
    answer = gw.call("POST", f"{PREFIX}/images/edits", json={"model": "edit", "prompt": "x"})
    assert answer.status_code == 415
    assert "multipart/form-data" in _error(answer)["message"]


# --- the template's openai block --------------------------------------------------------------


def _load(openai: dict[str, Any]) -> Any:
    doc = {**DRAW, "openai": openai}
    return parse_text(yaml.safe_dump(doc), file="t.yaml", suffix=".yaml", default_name="t")


@pytest.mark.parametrize(
    ("openai", "key", "problem"),
    [
        (
            {"size": ["width", "height"]},
            "openai.prompt",
            "missing: every OpenAI images request has a prompt",
        ),
        (
            {"prompt": "prompt", "colour": "look"},
            "openai.colour",
            "not an OpenAI images field (known: prompt, size, n, image, mask, quality, style, "
            "background)",
        ),
        (
            {"prompt": "prompt", "size": "width"},
            "openai.size",
            "must name two integer parameters: [width, height]",
        ),
        (
            {"prompt": "prompt", "size": ["width", "look"]},
            "openai.size",
            "must name two integer parameters: [width, height] ('look' is string)",
        ),
        (
            {"prompt": "prompt", "n": "look"},
            "openai.n",
            "must name one integer parameter (the batch size) ('look' is string)",
        ),
        (
            {"prompt": "prompt", "image": "width"},
            "openai.image",
            "must name image parameters ('width' is integer)",
        ),
        ({"prompt": "width"}, "openai.prompt", "must name text parameters ('width' is integer)"),
    ],
)
def test_an_openai_block_that_cannot_be_applied_is_refused_when_loaded(
    openai: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(TemplateFileError) as caught:
        _load(openai)
    assert (caught.value.key, caught.value.problem) == (key, problem)


def test_the_shipped_blocks_load_and_map_what_their_graphs_take() -> None:
    library = TemplateLibrary([], shipped=True)
    models = {t.name: t.openai for t in library.all() if t.openai is not None}
    assert models["txt2img"] == {"prompt": "prompt", "size": ("width", "height"), "n": "batch_size"}
    assert models["inpaint"] == {"prompt": "prompt", "image": "image", "mask": "mask"}
    assert "upscale" not in models


def test_a_client_that_leaves_has_its_jobs_cancelled(gw: Gateway) -> None:
    """A chat front end that gives up (its own timeout) must not leave the fleet drawing
    pictures no one will collect."""
    gw.outcome = None  # the job stays queued
    body = b'{"model": "alone", "prompt": "x", "n": 2}'
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(0.3)  # the client waits a while, then closes the connection
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": f"{PREFIX}/images/generations",
            "raw_path": f"{PREFIX}/images/generations".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"gw.test")],
            "client": ("127.0.0.1", 1),
            "server": ("gw.test", 80),
        }
        await asyncio.wait_for(gw.app(scope, receive, send), 10)

    run(go())
    assert sorted(str(j.status) for j in gw.jobs()) == ["cancelled", "cancelled"]
    assert sent == []  # nobody to answer
