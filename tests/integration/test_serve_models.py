"""Fetch before run: a job naming a checkpoint that only a manifest knows downloads it from a
real file server, then runs on a real ComfyUI; a file nobody knows fails the job at once."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, png_size, serve_config
from tests.model_file_server import ModelFileServer
from tests.tiny_model import tiny_checkpoint, tiny_sd15_graph

pytestmark = pytest.mark.comfyui

FETCHED = "fetched-tiny.safetensors"
PRESET_FILE = "preset-tiny.safetensors"


@pytest.fixture(scope="module")
def served(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, ModelFileServer, Path]]:
    source = comfyui_install / "models" / "checkpoints" / tiny_checkpoint(comfyui_install)
    files = tmp_path_factory.mktemp("files")
    shutil.copyfile(source, files / FETCHED)
    shutil.copyfile(source, files / PRESET_FILE)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    size = source.stat().st_size
    with ModelFileServer(files) as server:
        entry: dict[str, Any] = {"type": "checkpoints", "size": size, "sha256": digest}
        manifest = {
            "models": [{"source": server.url(FETCHED), "filename": FETCHED} | entry],
            "presets": {
                "tiny": {
                    "description": "the test suite's tiny SD1.5",
                    "files": [{"source": server.url(PRESET_FILE), "filename": PRESET_FILE} | entry],
                }
            },
        }
        root = tmp_path_factory.mktemp("fetch")
        (root / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
        models = root / "models"
        ws = workspace_sharing(comfyui_install, root / "ws")
        serve_config(
            ws, models_root=str(models), models={"manifests": [str(root / "manifest.yaml")]}
        )
        srv = Server(ws, instances=1).start()
        try:
            yield srv, server, models
        finally:
            srv.close()


def test_a_checkpoint_only_a_manifest_knows_is_fetched_then_the_job_runs(
    served: tuple[Server, ModelFileServer, Path],
) -> None:
    srv, files, models = served
    assert not (models / "checkpoints" / FETCHED).exists()
    graph = tiny_sd15_graph(FETCHED, seed=time.time_ns() % 1000, prefix="fetched")
    answer = srv.http.post("/v1/jobs", json={"workflow": graph}, headers={"Prefer": "wait=180"})
    job = answer.json()
    assert job["status"] == "succeeded", job
    image = next(o for o in job["outputs"] if o["kind"] == "images")
    assert png_size(srv.http.get(image["url"]).content) == (64, 64)
    fetched = models / "checkpoints" / FETCHED
    assert fetched.stat().st_size == (files.root / FETCHED).stat().st_size
    assert files.bytes_sent(FETCHED) == fetched.stat().st_size  # fetched once, whole
    kinds = [e["kind"] for e in _events(srv, job["id"])]
    assert "downloading" in kinds
    assert kinds.index("downloading") < kinds.index("started")


def test_a_model_nobody_knows_fails_the_job_naming_node_and_file(
    served: tuple[Server, ModelFileServer, Path],
) -> None:
    srv, _, _ = served
    graph = tiny_sd15_graph("nowhere.safetensors", seed=1, prefix="missing")
    answer = srv.http.post("/v1/jobs", json={"workflow": graph}, headers={"Prefer": "wait=60"})
    job = answer.json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "model_missing"
    assert "nowhere.safetensors" in job["error"]["message"]
    assert "1" in job["error"]["message"] and job["attempts"] == 1


def test_a_preset_installs_as_a_job_and_is_then_listed(
    served: tuple[Server, ModelFileServer, Path],
) -> None:
    srv, _, models = served
    started = srv.http.post("/v1/presets/tiny/install")
    assert started.status_code == 202, started.text
    [job] = srv.wait_all([started.json()["id"]], 120)
    assert job["status"] == "succeeded", job
    assert (models / "checkpoints" / PRESET_FILE).is_file()
    listed = srv.http.get("/v1/models", params={"type": "checkpoints"}).json()["models"]
    assert PRESET_FILE in {m.get("filename", m.get("name")) for m in listed}
    presets = {p["name"]: p for p in srv.http.get("/v1/presets").json()["presets"]}
    assert presets["tiny"]["complete"] is True


def _events(srv: Server, job_id: str) -> list[dict[str, Any]]:
    import asyncio

    from comfyfleet.jobs import SqliteJobStore

    async def read() -> list[dict[str, Any]]:
        store = SqliteJobStore.open(srv.ws / "state" / "jobs.db")
        try:
            return [e.to_dict() for e in await store.events(job_id)]
        finally:
            await store.close()

    return asyncio.run(read())
