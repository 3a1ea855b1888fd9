"""The index, presets' completeness, removal, fetch-before-run and the gateway routes, on a
temporary models root with a real loopback file server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from comfyfleet.gateway._errors import ApiError, api_error_handler
from comfyfleet.gateway._models_api import models_router
from comfyfleet.models import (
    Catalog,
    ModelFolders,
    ModelLibrary,
    ModelMissing,
    ModelSettings,
    UrlGuard,
    parse_manifest,
)
from comfyfleet.netguard import NetPolicy
from tests.model_file_server import ModelFileServer, write_random_file


def make_library(tmp_path: Path, server: ModelFileServer | None, sha: str = "") -> ModelLibrary:
    base = server.base_url if server else "http://127.0.0.1:9"
    manifest = parse_manifest(
        f"""
presets:
  tiny:
    files:
      - {{source: "{base}/ckpt.bin", type: checkpoints, filename: tiny.safetensors,
         size: 5000, sha256: "{sha or "0" * 64}"}}
models:
  - {{source: "{base}/lora.bin", type: loras, filename: style/known.safetensors}}
""",
        "test.yaml",
    )
    folders = ModelFolders(tmp_path / "models", {"loras": "loras,Lora"})
    settings = ModelSettings(free_space_margin_bytes=0, url_cache_max_bytes=3000)
    return ModelLibrary(
        folders,
        settings,
        catalog=Catalog.from_manifests([manifest]),
        state_dir=tmp_path / "st",
        url_guard=UrlGuard(NetPolicy.build(networks=["127.0.0.1/32"])),  # the test server's
    )


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "served"
    write_random_file(root / "lora.bin", 1000, seed=2)
    write_random_file(root / "url1.bin", 2000, seed=3)
    write_random_file(root / "url2.bin", 2000, seed=4)
    return root, write_random_file(root / "ckpt.bin", 5000, seed=1)


def test_install_preset_then_index_knows_hash_and_completeness(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, sha = served
    with ModelFileServer(root) as server:
        library = make_library(tmp_path, server, sha)
        assert not library.presets()[0].complete
        asyncio.run(library.install_preset("tiny"))
        served_once = server.bytes_sent("ckpt.bin")
        asyncio.run(library.install_preset("tiny"))  # already there: nothing fetched
        assert server.bytes_sent("ckpt.bin") == served_once == 5000
    status = library.presets()[0]
    assert status.complete and status.files[0].state == "ok"
    entries = library.models("checkpoints")
    assert [(e.name, e.size, e.sha256) for e in entries] == [("tiny.safetensors", 5000, sha)]
    fresh = make_library(tmp_path, None, sha)  # a new process: the hash comes from the cache
    assert fresh.models("checkpoints")[0].sha256 == sha
    removed = fresh.remove("checkpoints", "tiny.safetensors")
    assert not removed.exists() and not fresh.presets()[0].complete


def test_a_file_in_the_second_folder_of_a_type_is_found(tmp_path: Path) -> None:
    library = make_library(tmp_path, None)
    other = tmp_path / "models" / "Lora" / "mine.safetensors"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"abc")
    entries = library.models("loras", verify=True)
    assert [(e.name, e.sha256) for e in entries] == [
        ("mine.safetensors", hashlib.sha256(b"abc").hexdigest())
    ]


def test_ensure_downloads_known_files_and_rewrites_urls(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, sha = served
    with ModelFileServer(root) as server:
        library = make_library(tmp_path, server, sha)
        workflow: dict[str, Any] = {
            "1": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "tiny.safetensors"},
            },
            "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "style/known.safetensors"}},
            "3": {
                "class_type": "UpscaleModelLoader",
                "inputs": {"model_name": server.url("url1.bin")},
            },
        }
        seen: list[Any] = []
        new = asyncio.run(library.ensure(workflow, seen.append))
        name = new["3"]["inputs"]["model_name"]
        assert name.startswith("comfyfleet-url-cache/") and name.endswith("-url1.bin")
        assert (tmp_path / "models" / "upscale_models" / name).stat().st_size == 2000
        assert (tmp_path / "models" / "loras" / "style" / "known.safetensors").is_file()
        assert workflow["3"]["inputs"]["model_name"] == server.url("url1.bin"), "input untouched"
        assert {p.file for p in seen if p.phase == "done"} == {
            "tiny.safetensors",
            "known.safetensors",
            name.split("/")[1],
        }
        second = {
            "9": {
                "class_type": "UpscaleModelLoader",
                "inputs": {"model_name": server.url("url2.bin")},
            }
        }
        asyncio.run(library.ensure(second))  # over the 3000-byte cache limit: the older goes
    assert not (tmp_path / "models" / "upscale_models" / name).exists()


def test_ensure_fails_naming_node_and_file_before_downloading(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, sha = served
    with ModelFileServer(root) as server:
        library = make_library(tmp_path, server, sha)
        workflow = {
            "1": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "tiny.safetensors"},
            },
            "7": {"class_type": "VAELoader", "inputs": {"vae_name": "nobody.safetensors"}},
        }
        with pytest.raises(ModelMissing) as caught:
            asyncio.run(library.ensure(workflow))
        assert server.log == []
    assert "node 7 (VAELoader): input 'vae_name'" in caught.value.message
    assert "nobody.safetensors" in caught.value.message
    assert caught.value.details()["folder_type"] == "vae"


def test_gateway_routes(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, sha = served
    library = make_library(tmp_path, None, sha)
    started: list[str] = []

    async def start_install(name: str) -> str:
        started.append(name)
        return "job-1"

    app = FastAPI()
    app.add_exception_handler(ApiError, api_error_handler)
    app.include_router(models_router(library, start_install))
    target = tmp_path / "models" / "checkpoints" / "tiny.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes((root / "ckpt.bin").read_bytes())

    async def calls(client: httpx.AsyncClient) -> None:
        models = (await client.get("/v1/models", params={"type": "checkpoints"})).json()["models"]
        assert [m["name"] for m in models] == ["tiny.safetensors"] and "path" not in models[0]
        presets = (await client.get("/v1/presets", params={"verify": "true"})).json()["presets"]
        assert presets[0]["name"] == "tiny" and presets[0]["complete"] is True
        answer = await client.post("/v1/presets/tiny/install")
        assert answer.status_code == 202 and answer.json()["id"] == "job-1" and started == ["tiny"]
        missing = await client.post("/v1/presets/nope/install")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "preset_not_found"
        assert (await client.get("/v1/models", params={"type": "nope"})).status_code == 400
        gone = await client.delete("/v1/models/checkpoints/tiny.safetensors")
        assert gone.status_code == 200 and not target.exists()
        deleted = {"folder_type": "checkpoints", "name": "tiny.safetensors"}
        assert gone.json() == {"deleted": deleted}
        assert (await client.delete("/v1/models/checkpoints/tiny.safetensors")).status_code == 404
        bad = await client.delete("/v1/models/checkpoints/..%2F..%2Fetc%2Fpasswd")
        assert bad.status_code in (400, 404)
        outside = tmp_path / "outside.txt"  # what `..` would reach from the checkpoints folder
        outside.write_text("keep")
        escape = await client.delete("/v1/models/checkpoints/..%2F..%2Foutside.txt")
        assert escape.status_code == 400 and outside.read_text() == "keep"

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await calls(client)

    asyncio.run(main())


def test_cli_list_and_remove(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from comfyfleet.cli._models import models_app

    ckpt = tmp_path / "ws" / "models" / "checkpoints" / "a.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"abc")
    runner = CliRunner()
    listed = runner.invoke(models_app, ["list", "-w", str(tmp_path / "ws"), "--json", "--verify"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert data["models"][0]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert {p["name"] for p in data["presets"]} >= {"sd15", "sdxl-base"}
    removed = runner.invoke(
        models_app, ["remove", "checkpoints", "a.safetensors", "-w", str(tmp_path / "ws")]
    )
    assert removed.exit_code == 0 and not ckpt.exists()


def test_cli_list_says_which_preset_files_are_missing_and_which_are_wrong(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from comfyfleet.cli._models import models_app

    decoder = tmp_path / "ws" / "models" / "vae_approx" / "taesd_decoder.pth"
    decoder.parent.mkdir(parents=True)
    decoder.write_bytes(b"not the upstream decoder")
    listed = CliRunner().invoke(
        models_app, ["list", "-w", str(tmp_path / "ws"), "--verify"], env={"COLUMNS": "200"}
    )
    assert listed.exit_code == 0, listed.output
    [line] = [ln for ln in listed.output.splitlines() if ln.startswith("preset taesd:")]
    assert "wrong hash: taesd_decoder.pth" in line
    assert "missing: taesdxl_decoder.pth, taesd3_decoder.pth, taef1_decoder.pth" in line


def test_cli_install_a_source_then_hash_a_manifest(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    import yaml
    from typer.testing import CliRunner

    from comfyfleet.cli._models import models_app

    root, sha = served
    workspace = str(tmp_path / "ws")
    runner = CliRunner()
    with ModelFileServer(root) as server:
        args = ["install", server.url("ckpt.bin"), "--type", "checkpoints"]
        args += ["--name", "mine.safetensors", "--sha256", sha, "-w", workspace]
        installed = runner.invoke(models_app, args)
    assert installed.exit_code == 0, installed.output
    target = tmp_path / "ws" / "models" / "checkpoints" / "mine.safetensors"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha
    manifest = tmp_path / "mine.yaml"
    manifest.write_text(
        "models:\n"
        "  - {source: 'https://example.invalid/m', type: checkpoints, filename: mine.safetensors}\n"
    )
    hashed = runner.invoke(models_app, ["hash", str(manifest), "-w", workspace])
    assert hashed.exit_code == 0, hashed.output
    entry = yaml.safe_load(manifest.read_text())["models"][0]
    assert (entry["size"], entry["sha256"]) == (5000, sha)
