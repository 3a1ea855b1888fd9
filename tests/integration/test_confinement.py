"""No job can hold an instance, write into another job's folder or read files outside the input
folder: the attacks of the job API review, against `comfyfleet serve` with a real ComfyUI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("confine"))
    serve_config(ws, models_root=str(comfyui_install / "models"))
    server = Server(ws, instances=1).start()
    yield server
    server.close()


def _seed() -> int:
    return time.time_ns() % 1_000_000_007


def _wait(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    answer = server.http.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _normal_job_runs_quickly(server: Server) -> None:
    started = time.monotonic()
    job = _wait(server, {"workflow": model_free_graph(_seed(), "after")})
    assert job["status"] == "succeeded", job
    assert time.monotonic() - started < 5


def test_a_model_name_too_long_for_the_disk_fails_its_job_and_frees_the_instance(
    server: Server,
) -> None:
    graph = model_free_graph(_seed()) | {
        "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m" * 5000}}
    }
    failed = [_wait(server, {"workflow": graph}) for _ in range(2)]
    for job in failed:
        assert job["status"] == "failed" and job["attempts"] == 1
        assert job["error"]["code"] == "invalid_job"
        assert "File name too long" in job["error"]["message"]
    _normal_job_runs_quickly(server)


def test_a_prefix_fed_by_a_link_stays_in_the_jobs_own_folder(server: Server) -> None:
    victim = _wait(server, {"workflow": model_free_graph(_seed(), "mine"), "id": f"v{_seed()}"})
    graph = model_free_graph(_seed())
    graph["4"] = {"class_type": "PrimitiveString", "inputs": {"value": f"{victim['id']}/planted"}}
    graph["3"]["inputs"]["filename_prefix"] = ["4", 0]
    attacker = _wait(server, {"workflow": graph})
    assert attacker["status"] == "succeeded", attacker
    [image] = [o for o in attacker["outputs"] if o["kind"] == "images"]
    assert image["url"] == f"/v1/outputs/{attacker['id']}/{victim['id']}/planted_00001_.png"
    assert server.http.get(image["url"]).status_code == 200
    planted = server.http.get(f"/v1/outputs/{victim['id']}/planted_00001_.png")
    assert planted.status_code == 404
    victim_files = sorted(p.name for p in (server.ws / "output" / victim["id"]).iterdir())
    assert victim_files == ["mine_00001_.png"]


def test_a_computed_prefix_cannot_climb_out(server: Server) -> None:
    graph = model_free_graph(_seed())
    graph["4"] = {
        "class_type": "StringConcatenate",
        "inputs": {"string_a": ".", "string_b": "./escaped", "delimiter": ""},
    }
    graph["3"]["inputs"]["filename_prefix"] = ["4", 0]
    job = _wait(server, {"workflow": graph})
    assert job["status"] == "succeeded", job
    [image] = [o for o in job["outputs"] if o["kind"] == "images"]
    assert image["path"] == "escaped_00001_.png"
    assert not list((server.ws / "output").glob("escaped*"))


def test_a_loader_input_that_leaves_the_input_folder_is_refused(server: Server) -> None:
    before = server.http.get("/v1/jobs").json()["jobs"]
    graph = model_free_graph(_seed()) | {
        "7": {"class_type": "LoadLatent", "inputs": {"latent": "../../../../etc/passwd"}}
    }
    answer = server.http.post("/v1/jobs", json={"workflow": graph})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "unsafe_path"
    assert error["message"] == (
        "node 7 (LoadLatent): input 'latent' is refused: it climbs out of its folder with '..'"
    )
    assert server.http.get("/v1/jobs").json()["jobs"] == before


def test_comfyui_itself_answers_the_same_for_files_that_exist_and_do_not(server: Server) -> None:
    """The runtime extension's guard, asked directly: no answer tells which files exist."""
    errors = []
    with httpx.Client(base_url=f"http://127.0.0.1:{server.base_port}", trust_env=False) as comfy:
        for name in ("../../../../etc/passwd", "../../../../etc/no-such-file", "x.png [output]"):
            graph = {"1": {"class_type": "LoadLatent", "inputs": {"latent": name}}}
            graph["2"] = {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0]}}
            graph["2"]["inputs"]["filename_prefix"] = "probe"
            answer = comfy.post("/prompt", json={"prompt": graph})
            assert answer.status_code == 400
            [error] = answer.json()["node_errors"]["1"]["errors"]
            errors.append((error["type"], error["message"]))
    assert {e[0] for e in errors} == {"custom_validation_failed"}
    assert len({e[1] for e in errors}) == 1
    _normal_job_runs_quickly(server)
