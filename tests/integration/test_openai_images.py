"""The OpenAI images API end to end: a real `comfyfleet serve` (one CPU ComfyUI instance, keys
on) running the tiny SD1.5 checkpoint through templates with an `openai` block, written into
the workspace's `templates/` folder (two sampler steps and 64 px by default, since an OpenAI
request cannot ask for fewer steps).

What a user of each client checks:

- the official `openai` package, unchanged, with the gateway key as its API key and
  `base_url=.../openai/v1`: `images.generate` gives PNGs of the requested size (b64_json), or
  URLs that download a PNG without the key; `images.edit` with an image and a mask gives a PNG;
  its exceptions carry OpenAI's error shape (unknown model, bad size, no key, full queue);
- Open WebUI's OpenAI image engine, reproduced request for request (see
  `test_open_webui_requests_get_real_pngs`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest
import yaml

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, png_size, serve_config, sleep_graph
from tests.tiny_model import tiny_checkpoint

pytestmark = pytest.mark.comfyui

KEY = "cf-openai-test-" + "k" * 32
SEED = {"type": "integer", "default": "random", "minimum": 0, "maximum": 4294967295}
SIZE = {"type": "integer", "default": 64, "minimum": 32, "maximum": 256, "multiple_of": 8}


def _txt2img(ckpt: str) -> dict[str, Any]:
    return {
        "description": "the tiny SD1.5 checkpoint, two steps",
        "models": {"checkpoints": [ckpt]},
        "parameters": {
            "prompt": {"type": "text", "default": "a cat", "sets": ["6.text"]},
            "seed": {**SEED, "sets": ["3.seed"]},
            "steps": {
                "type": "integer",
                "default": 2,
                "minimum": 1,
                "maximum": 4,
                "sets": ["3.steps"],
            },
            "width": {**SIZE, "sets": ["5.width"]},
            "height": {**SIZE, "sets": ["5.height"]},
            "batch_size": {
                "type": "integer",
                "default": 1,
                "minimum": 1,
                "maximum": 4,
                "sets": ["5.batch_size"],
            },
        },
        "openai": {"prompt": "prompt", "size": ["width", "height"], "n": "batch_size"},
        "workflow": {
            "3": _sampler(["5", 0]),
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "5": {
                "class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1},
            },
            **_common(),
        },
    }


def _inpaint(ckpt: str) -> dict[str, Any]:
    """Repaints what the mask leaves transparent (ComfyUI's LoadImageMask inverts the alpha, as
    OpenAI's mask means it); without a mask, the image's own transparent pixels."""
    return {
        "description": "inpainting with the tiny SD1.5 checkpoint, two steps",
        "models": {"checkpoints": [ckpt]},
        "parameters": {
            "image": {"type": "image", "sets": ["10.image", "12.image"]},
            "mask": {"type": "image", "required": False, "sets": ["12.image"]},
            "prompt": {"type": "text", "default": "a hat", "sets": ["6.text"]},
            "seed": {**SEED, "sets": ["3.seed"]},
        },
        "openai": {"prompt": "prompt", "image": "image", "mask": "mask"},
        "workflow": {
            "3": _sampler(["13", 0]),
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
            "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
            "12": {
                "class_type": "LoadImageMask",
                "inputs": {"image": "example.png", "channel": "alpha"},
            },
            "13": {
                "class_type": "SetLatentNoiseMask",
                "inputs": {"samples": ["11", 0], "mask": ["12", 0]},
            },
            **_common(),
        },
    }


def _sampler(latent: list[Any]) -> dict[str, Any]:
    inputs = {"seed": 0, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal"}
    links = {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": latent}
    return {"class_type": "KSampler", "inputs": inputs | links | {"denoise": 1.0}}


def _common() -> dict[str, Any]:
    return {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "oai", "images": ["8", 0]}},
    }


@dataclass
class Env:
    server: Server
    base: str
    http: httpx.Client
    """With the key, for the native API."""

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(api_key=KEY, base_url=self.base, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def env(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ckpt = tiny_checkpoint(comfyui_install)
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("openai"))
    (ws / "templates").mkdir()
    for name, doc in (("tiny-txt2img", _txt2img(ckpt)), ("tiny-inpaint", _inpaint(ckpt))):
        (ws / "templates" / f"{name}.yaml").write_text(
            yaml.safe_dump(doc, sort_keys=False), encoding="utf-8"
        )
    serve_config(
        ws,
        models_root=str(comfyui_install / "models"),
        auth={"enabled": True, "api_key": KEY, "public_paths": ["/health", "/ready"]},
        serve={"max_queued": 2},
    )
    server = Server(ws, instances=1).start()
    headers = {"Authorization": f"Bearer {KEY}"}
    http = httpx.Client(base_url=server.url, timeout=120, trust_env=False, headers=headers)
    try:
        yield Env(server, f"{server.url}/openai/v1", http)
    finally:
        http.close()
        server.close()


def _png(width: int, height: int, alpha: bytes | None = None) -> bytes:
    """An RGB (or, with `alpha` per pixel, RGBA) PNG (the project venv has no Pillow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    colour = 6 if alpha is not None else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    rows = []
    for y in range(height):
        pixels = b"".join(
            b"\x10\x80\xf0" + (alpha[y * width + x : y * width + x + 1] if alpha else b"")
            for x in range(width)
        )
        rows.append(b"\0" + pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def _left_half_transparent(width: int, height: int) -> bytes:
    alpha = bytes(0 if x < width // 2 else 255 for _ in range(height) for x in range(width))
    return _png(width, height, alpha)


# --- the openai package -----------------------------------------------------------------------


def test_images_generate_gives_pngs_of_the_requested_size(env: Env) -> None:
    with env.client() as client:
        assert "tiny-txt2img" in {m.id for m in client.models.list()}
        result = client.images.generate(
            model="tiny-txt2img",
            prompt="a lighthouse at dusk",
            size="96x64",
            n=2,
            response_format="b64_json",
        )
    assert result.data is not None and len(result.data) == 2
    images = [base64.b64decode(item.b64_json or "") for item in result.data]
    assert [png_size(image) for image in images] == [(96, 64), (96, 64)]
    assert result.output_format == "png"
    assert abs(result.created - time.time()) < 120
    # one job, an ordinary one: a batch of two, the template and the values recorded
    (job,) = env.http.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
    assert job["status"] == "succeeded"
    assert job["options"]["template"]["name"] == "tiny-txt2img"
    assert job["options"]["template"]["params"]["batch_size"] == 2


def test_url_answers_download_a_png_without_the_key(env: Env) -> None:
    with env.client() as client:
        result = client.images.generate(model="tiny-txt2img", prompt="a red boat", size="64x48")
    assert result.data is not None
    (item,) = result.data
    assert item.url is not None and item.url.startswith(f"{env.base}/images/outputs/")
    with httpx.Client(trust_env=False) as anonymous:
        image = anonymous.get(item.url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert png_size(image.content) == (64, 48)
        forged = anonymous.get(item.url.replace("signature=", "signature=x"))
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "invalid_signature"


def test_images_edit_with_an_image_and_a_mask_gives_a_png(env: Env) -> None:
    with env.client() as client:
        result = client.images.edit(
            model="tiny-inpaint",
            image=("photo.png", _png(64, 64), "image/png"),
            mask=("mask.png", _left_half_transparent(64, 64), "image/png"),
            prompt="a straw hat",
            response_format="b64_json",
        )
    assert result.data is not None
    (item,) = result.data
    assert png_size(base64.b64decode(item.b64_json or "")) == (64, 64)


def test_errors_come_in_openais_shape_through_the_package(env: Env) -> None:
    with env.client(max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.images.generate(model="dall-e-3", prompt="x")
        assert missing.value.code == "model_not_found"
        assert "tiny-txt2img" in missing.value.message
        with pytest.raises(openai.BadRequestError) as too_big:
            client.images.generate(model="tiny-txt2img", prompt="x", size="1024x64")
        assert too_big.value.param == "size"
        assert "parameter 'width' must be at most 256 (got 1024)" in too_big.value.message
    with openai.OpenAI(api_key="cf-wrong", base_url=env.base, max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError) as refused:
            stranger.images.generate(model="tiny-txt2img", prompt="x")
        assert refused.value.code == "invalid_api_key"
    with httpx.Client(trust_env=False) as anonymous:
        no_key = anonymous.post(
            f"{env.base}/images/generations", json={"model": "tiny-txt2img", "prompt": "x"}
        )
    assert no_key.status_code == 401
    assert no_key.json() == {
        "error": {
            "message": "this API needs a key: send the header 'Authorization: Bearer <key>'"
            " (browsers: sign in at /login)",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    no_prompt = env.http.post("/openai/v1/images/generations", json={"model": "tiny-txt2img"})
    assert no_prompt.status_code == 400
    assert no_prompt.json()["error"]["param"] == "prompt"
    assert no_prompt.json()["error"]["code"] == "missing_required_parameter"


def test_a_full_queue_is_a_429_rate_limit_error(env: Env) -> None:
    """serve.max_queued is 2: sleeping jobs fill the instance's two slots, then the queue."""
    filler: list[str] = []
    try:
        for seed in range(8):
            answer = env.http.post("/v1/jobs", json={"workflow": sleep_graph(60, seed + 7)})
            if answer.status_code == 429:
                break
            assert answer.status_code == 202, answer.text
            filler.append(answer.json()["id"])
        else:
            raise AssertionError("the queue never filled")
        with env.client(max_retries=0) as client, pytest.raises(openai.RateLimitError) as full:
            client.images.generate(model="tiny-txt2img", prompt="x")
        assert full.value.code == "queue_full"
        assert full.value.response.headers["retry-after"] == "5"
        assert full.value.body == {
            "message": "the queue holds 2 jobs; try later",
            "type": "rate_limit_error",
            "param": None,
            "code": "queue_full",
        }
    finally:
        for job_id in filler:
            env.http.post(f"/v1/jobs/{job_id}/cancel")
        env.server.http.headers["Authorization"] = f"Bearer {KEY}"
        env.server.wait_all(filler, timeout=60)


# --- Open WebUI, request for request ----------------------------------------------------------


async def _open_webui_generate(base: str, model: str, prompt: str, size: str) -> list[bytes]:
    """What Open WebUI's OpenAI image engine does for a chat's image request, with the engine
    set to "openai", its base URL set to `.../openai/v1`, its key set to a gateway key and its
    model to a template name. Reproduced from open-webui 0.12.4 (PyPI),
    `backend/open_webui/routers/images.py`, `image_generations` and `get_image_data`:

    - POST `{base}/images/generations` with aiohttp, headers `Authorization: Bearer KEY` and
      `Content-Type: application/json`, JSON `{"model", "prompt", "n", "size",
      "response_format": "b64_json"}` (`response_format` is added for every model name not
      matching IMAGE_URL_RESPONSE_MODELS_REGEX_PATTERN, `^gpt-image` by default);
    - `raise_for_status()`, then the answer read with `json(content_type=None)`;
    - for each item of `data`: a `url` is fetched (with the same Authorization header when the
      URL has the base's origin, without one otherwise; the answer's content-type must start
      with `image`), else `b64_json` is base64-decoded.
    """
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    data = {"model": model, "prompt": prompt, "n": 1, "size": size, "response_format": "b64_json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/images/generations", json=data, headers=headers) as r:
            r.raise_for_status()
            res = await r.json(content_type=None)
        images = []
        for image in res["data"]:
            if image.get("url"):
                images.append(await _open_webui_fetch(session, image["url"], base, headers))
            else:
                images.append(base64.b64decode(image["b64_json"]))
        return images


async def _open_webui_fetch(
    session: aiohttp.ClientSession, url: str, base: str, headers: dict[str, str]
) -> bytes:
    same_origin = url.split("/")[:3] == base.split("/")[:3]
    sent = {k: v for k, v in headers.items() if k != "Content-Type"} if same_origin else None
    async with session.get(url, headers=sent) as r:
        r.raise_for_status()
        assert r.headers.get("content-type", "").split("/")[0] == "image"
        return await r.read()


async def _open_webui_edit(base: str, model: str, prompt: str, image: bytes) -> list[bytes]:
    """Open WebUI's image edit with the engine "openai" (same file, `image_edits`): the chat's
    image as a data URL becomes a multipart file part `image` named `<uuid4>.png` with its
    type, beside text fields `model`, `prompt` and `response_format=b64_json` (no `n` and no
    `size` unless configured, no mask), posted with aiohttp's FormData and the header
    `Authorization: Bearer KEY`; the answer is read as for a generation."""
    headers = {"Authorization": f"Bearer {KEY}"}
    form = aiohttp.FormData()
    for key, value in {"model": model, "prompt": prompt, "response_format": "b64_json"}.items():
        form.add_field(key, str(value))
    form.add_field(
        "image", io.BytesIO(image), filename=f"{uuid.uuid4()}.png", content_type="image/png"
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/images/edits", headers=headers, data=form) as r:
            r.raise_for_status()
            res = await r.json(content_type=None)
    return [base64.b64decode(item["b64_json"]) for item in res["data"]]


def test_open_webui_requests_get_real_pngs(env: Env) -> None:
    (generated,) = asyncio.run(
        _open_webui_generate(env.base, "tiny-txt2img", "a snowy cabin", "80x64")
    )
    assert png_size(generated) == (80, 64)
    (edited,) = asyncio.run(
        _open_webui_edit(env.base, "tiny-inpaint", "a blue door", _left_half_transparent(64, 64))
    )
    assert png_size(edited) == (64, 64)


def test_open_webui_fetches_a_url_answer_with_and_without_its_key(env: Env) -> None:
    """Open WebUI asks for URLs (no `response_format`) when the model name matches its
    `^gpt-image` pattern, and then fetches each one: with its key for the base's origin, without
    one for another origin. Both fetches get the PNG."""

    async def go() -> tuple[bytes, bytes]:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        data = {"model": "tiny-txt2img", "prompt": "a kite", "n": 1, "size": "64x64"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{env.base}/images/generations", json=data, headers=headers
            ) as r:
                r.raise_for_status()
                (item,) = (await r.json(content_type=None))["data"]
            with_key = await _open_webui_fetch(session, item["url"], env.base, headers)
            other_origin = "http://elsewhere.invalid/openai/v1"
            without = await _open_webui_fetch(session, item["url"], other_origin, headers)
        return with_key, without

    with_key, without = asyncio.run(go())
    assert png_size(with_key) == (64, 64)
    assert without == with_key
