"""Rewriting graphs: which values become stored assets, once each, and errors that say where."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.assets import (
    ASSETS_FOLDER,
    AssetResolver,
    AssetStore,
    MediaInputError,
    UrlFetcher,
    resolve_media,
)
from comfyfleet.gateway._assets_api import media_api_error

pytestmark = pytest.mark.anyio

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeResolver:
    """Records every call; answers names derived from what it was given."""

    def __init__(self, fail: dict[str, MediaInputError] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail or {}

    async def url(self, url: str) -> str:
        self.calls.append(("url", url))
        if url in self.fail:
            raise self.fail[url]
        await asyncio.sleep(0)
        return f"fetched/{url.rsplit('/', 1)[-1]}"

    async def data(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.calls.append(("data", digest))
        return f"stored/{digest}"

    async def asset(self, asset_id: str) -> str:
        self.calls.append(("asset", asset_id))
        return f"{ASSETS_FOLDER}/{asset_id}.png"


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


async def test_each_form_in_a_loader_input_is_replaced() -> None:
    asset_id = "AB" * 32
    workflow = {
        "1": node("LoadImage", image="https://cdn.example.com/cat.png"),
        "2": node("LoadImageMask", image=f"data:image/png;base64,{PNG_B64}", channel="alpha"),
        "3": node("LoadVideo", file=PNG_B64),
        "4": node("LoadAudio", audio=f"asset:{asset_id}"),
        "5": node("LoadImage", image="already-there.png"),
        "6": node("VHS_LoadVideo", video="s3://bucket/clip.mp4", frame_load_cap=16),
    }
    original = copy.deepcopy(workflow)
    resolver = FakeResolver()
    result, rewrites = await resolve_media(workflow, resolver)

    digest = hashlib.sha256(PNG).hexdigest()
    assert result["1"]["inputs"]["image"] == "fetched/cat.png"
    assert result["2"]["inputs"] == {"image": f"stored/{digest}", "channel": "alpha"}
    assert result["3"]["inputs"]["file"] == f"stored/{digest}"
    assert result["4"]["inputs"]["audio"] == f"{ASSETS_FOLDER}/{'ab' * 32}.png"
    assert result["5"] == workflow["5"]
    assert result["6"]["inputs"] == {"video": "fetched/clip.mp4", "frame_load_cap": 16}
    assert workflow == original  # the submitted graph is not changed
    assert [(r.node_id, r.input_name, r.source) for r in rewrites] == [
        ("1", "image", "url"),
        ("2", "image", "data_uri"),
        ("3", "file", "base64"),
        ("4", "audio", "asset"),
        ("6", "video", "url"),
    ]
    assert all(len(r.original) < 200 for r in rewrites)  # never the whole base64 again
    # the PNG given twice (data URI and raw base64) is stored once
    assert sorted(resolver.calls) == sorted(
        [
            ("url", "https://cdn.example.com/cat.png"),
            ("data", digest),
            ("asset", "ab" * 32),
            ("url", "s3://bucket/clip.mp4"),
        ]
    )


async def test_other_inputs_take_only_the_explicit_forms() -> None:
    prompt = "a cat like https://example.com/cat.png, photo"
    workflow = {
        "6": node("CLIPTextEncode", text=prompt, clip=["4", 1]),
        "7": node("CLIPTextEncode", text="asset: a red car on a road"),
        "8": node("MyCustomLoader", path="https://example.com/x.png", b64=PNG_B64),
        "9": node("MyCustomLoader", picture=f"data:image/png;base64,{PNG_B64}"),
        "10": node("MyCustomLoader", picture=f"asset:{'c' * 64}"),
        "11": node("CLIPTextEncode", text="data:text/plain,hello"),
    }
    resolver = FakeResolver()
    result, rewrites = await resolve_media(workflow, resolver)
    assert result["6"] == workflow["6"]  # a URL inside a prompt stays text
    assert result["6"]["inputs"]["clip"] == ["4", 1]  # links untouched
    assert result["7"] == workflow["7"]
    assert result["8"] == workflow["8"]  # bare URL / raw base64 outside loaders: untouched
    assert result["9"]["inputs"]["picture"].startswith("stored/")
    assert result["10"]["inputs"]["picture"] == f"{ASSETS_FOLDER}/{'c' * 64}.png"
    assert result["11"] == workflow["11"]
    assert [(r.node_id, r.source) for r in rewrites] == [("9", "data_uri"), ("10", "asset")]


async def test_the_same_url_twice_is_fetched_once() -> None:
    url = "https://cdn.example.com/face.jpg"
    workflow = {
        "1": node("LoadImage", image=url),
        "2": node("LoadImage", image=url),
        "3": node("LoadImageMask", image=url),
    }
    resolver = FakeResolver()
    result, rewrites = await resolve_media(workflow, resolver)
    assert resolver.calls == [("url", url)]
    assert {result[n]["inputs"]["image"] for n in "123"} == {"fetched/face.jpg"}
    assert len(rewrites) == 3


async def test_a_graph_without_media_comes_back_equal() -> None:
    workflow = {"1": node("EmptyImage", width=8, height=8), "2": node("SaveImage", images=["1", 0])}
    resolver = FakeResolver()
    result, rewrites = await resolve_media(workflow, resolver)
    assert (result, rewrites, resolver.calls) == (workflow, [], [])


@pytest.mark.parametrize(
    ("value", "code", "text"),
    [
        ("data:image/png;base64,@@not base64@@", "bad_base64", "base64 data is not valid"),
        ("data:image/png,rawbytes", "bad_base64", "only base64 data: URIs"),
        ("asset:nothex", "asset_not_found", "not an asset id"),
        ("../../../etc/passwd", "bad_input_path", "outside ComfyUI's input folder"),
        ("/etc/passwd", "bad_input_path", "outside ComfyUI's input folder"),
        ("C:\\Windows\\win.ini", "bad_input_path", "outside ComfyUI's input folder"),
    ],
)
async def test_broken_values_name_node_class_and_input(value: str, code: str, text: str) -> None:
    workflow = {"10": node("LoadImage", image=value)}
    with pytest.raises(MediaInputError) as caught:
        await resolve_media(workflow, FakeResolver())
    error = caught.value
    assert error.code == code
    assert error.message.startswith("node 10 (LoadImage): input 'image': ")
    assert text in error.message
    assert (error.node_id, error.class_type, error.input_name) == ("10", "LoadImage", "image")


async def test_a_failed_fetch_names_the_first_node_that_uses_it() -> None:
    bad = "https://cdn.example.com/gone.png"
    resolver = FakeResolver({bad: MediaInputError("url_not_found", f"{bad} answered 404")})
    workflow = {
        "3": node("LoadImage", image="https://cdn.example.com/fine.png"),
        "12": node("LoadImageMask", image=bad),
        "13": node("LoadImage", image=bad),
    }
    with pytest.raises(MediaInputError) as caught:
        await resolve_media(workflow, resolver)
    assert caught.value.code == "url_not_found"
    assert caught.value.message == f"node 12 (LoadImageMask): input 'image': {bad} answered 404"


async def test_the_real_resolver_refuses_internal_urls_and_other_schemes(tmp_path: Path) -> None:
    resolver = AssetResolver(AssetStore(tmp_path), UrlFetcher())
    cases = {
        "http://127.0.0.1:8188/view?filename=x.png": "127.0.0.1 is a loopback address",
        "http://169.254.169.254/latest/meta-data/": "the cloud metadata service",
        "http://[::ffff:10.0.0.1]/a.png": "private address",
        "ftp://example.com/a.png": "ftp:// URLs are not fetched",
        "file:///etc/passwd": "file:// URLs are not fetched",
        "gopher://example.com/_x": "gopher:// URLs are not fetched",
        "s3://bucket/a.png": "no s3 storage is configured",
    }
    for url, text in cases.items():
        with pytest.raises(MediaInputError) as caught:
            await resolve_media({"10": node("LoadImage", image=url)}, resolver)
        assert caught.value.code == "url_refused", url
        assert caught.value.message.startswith("node 10 (LoadImage): input 'image': ")
        assert text in caught.value.message, caught.value.message


async def test_the_real_resolver_stores_inline_media_for_comfyui(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    resolver = AssetResolver(store, UrlFetcher(), max_inline_bytes=10_000)
    workflow = {"1": node("LoadImage", image=f"data:image/png;base64,{PNG_B64}")}
    result, _ = await resolve_media(workflow, resolver)
    name = result["1"]["inputs"]["image"]
    assert re.fullmatch(rf"{ASSETS_FOLDER}/[0-9a-f]{{64}}\.png", name)
    assert (tmp_path / name).read_bytes() == PNG  # where ComfyUI's LoadImage will look

    asset_id = name.split("/")[1].split(".")[0]
    result, _ = await resolve_media({"2": node("LoadImage", image=f"asset:{asset_id}")}, resolver)
    assert result["2"]["inputs"]["image"] == name

    with pytest.raises(MediaInputError) as missing:
        await resolve_media({"2": node("LoadImage", image=f"asset:{'0' * 64}")}, resolver)
    assert missing.value.code == "asset_not_found"

    big = base64.b64encode(PNG + b"\x00" * 20_000).decode()
    with pytest.raises(MediaInputError) as too_big:
        await resolve_media({"4": node("LoadImage", image=big)}, resolver)
    assert too_big.value.code == "input_too_large"
    assert too_big.value.node_id == "4"


async def test_object_store_urls_go_to_the_registered_reader(tmp_path: Path) -> None:
    asked: list[tuple[str, int]] = []

    async def s3_reader(url: str, max_bytes: int) -> bytes:
        asked.append((url, max_bytes))
        if url.endswith("missing.png"):
            raise FileNotFoundError(url)
        if url.endswith("denied.png"):
            raise PermissionError("access denied")
        return PNG

    store = AssetStore(tmp_path)
    resolver = AssetResolver(store, UrlFetcher(readers={"s3": s3_reader}, max_bytes=5000))
    result, _ = await resolve_media({"1": node("LoadImage", image="s3://b/cat.png")}, resolver)
    assert (tmp_path / result["1"]["inputs"]["image"]).read_bytes() == PNG
    assert asked == [("s3://b/cat.png", 5000)]
    assert store.get(result["1"]["inputs"]["image"].split("/")[1][:64]).filename == "cat.png"
    for url, code in (
        ("s3://b/missing.png", "url_not_found"),
        ("s3://b/denied.png", "url_unreachable"),
    ):
        with pytest.raises(MediaInputError) as caught:
            await resolve_media({"1": node("LoadImage", image=url)}, resolver)
        assert caught.value.code == code
    with pytest.raises(MediaInputError, match="no az storage"):
        await resolve_media({"1": node("LoadImage", image="az://c/x.png")}, resolver)


def test_the_gateway_answers_media_errors_as_400_or_422() -> None:
    error = MediaInputError("url_unreachable", "cannot connect").at("10", "LoadImage", "image")
    api = media_api_error(error)
    assert (api.status, api.code) == (422, "input_unreachable")
    assert api.details["node_id"] == "10" and api.details["reason"] == "url_unreachable"
    refused = media_api_error(MediaInputError("url_refused", "127.0.0.1 is a loopback address"))
    assert (refused.status, refused.code) == (422, "input_refused")
    bad = media_api_error(MediaInputError("bad_base64", "the base64 data is not valid"))
    assert (bad.status, bad.code) == (400, "bad_base64")


async def test_raw_base64_needs_a_known_media_type() -> None:
    # long valid base64 of text is a file name as far as we know: left alone
    text = base64.b64encode(b"just some words, " * 10).decode()
    assert len(text) > 64
    result = await resolve_media({"1": node("LoadImage", image=text)}, FakeResolver())
    assert result == ({"1": node("LoadImage", image=text)}, [])
