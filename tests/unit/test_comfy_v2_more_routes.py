"""Comfy API v2's health, a job's graph, and host files as assets (`from-path`), over the gateway
with an in-memory store: open and closed routes, the shapes the contract gives them, and every
refusal of a host path (outside the folders, through a link, missing, a folder, too large)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from blake3 import blake3

from comfyfleet.auth import ADMIN, READ, SUBMIT, KeyStore
from tests.unit.v2_gateway import GRAPH, PNG, Gateway


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def test_health_answers_healthy_without_a_key_when_keys_are_on(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    keys.create("ops", scopes=frozenset({READ}))
    gw = Gateway(tmp_path, keys=keys)
    answer = gw.call("GET", "/api/v2/health")
    assert (answer.status_code, answer.json()) == (200, {"status": "healthy"})
    refused = gw.call("GET", "/api/v2/jobs")
    assert refused.status_code == 401


def test_a_jobs_workflow_is_the_graph_it_runs_in_api_format(gw: Gateway) -> None:
    job = gw.call("POST", "/api/v2/jobs", json={"workflow": GRAPH}).json()
    answer = gw.call("GET", f"/api/v2/jobs/{job['id']}/workflow")
    assert answer.status_code == 200
    body = answer.json()
    assert body["format"] == "api"
    assert {k: v["class_type"] for k, v in body["workflow"].items()} == {
        "1": "EmptyImage",
        "2": "SaveImage",
    }
    assert body["workflow"]["1"]["inputs"] == GRAPH["1"]["inputs"]


def test_the_workflow_of_an_unknown_job_is_404_not_found(gw: Gateway) -> None:
    answer = gw.call("GET", "/api/v2/jobs/0123456789abcdef0123456789abcdef/workflow")
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


def _input_file(gw: Gateway, name: str, data: bytes = PNG) -> Path:
    folder = gw.assets.input_dir / "renders"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_a_file_in_the_input_folder_becomes_an_asset_once(gw: Gateway) -> None:
    path = _input_file(gw, "frame.png")
    first = gw.call("POST", "/api/v2/assets/from-path", json={"path": str(path)})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"] == hashlib.sha256(PNG).hexdigest()
    assert body["hash"] == f"blake3:{blake3(PNG).hexdigest()}"
    assert (body["size_bytes"], body["file_path"], body["created_new"]) == (
        len(PNG),
        "frame.png",
        True,
    )
    again = gw.call(
        "POST", "/api/v2/assets/from-path", json={"path": str(path), "file_path": "x.png"}
    )
    assert (again.status_code, again.json()["created_new"]) == (200, False)
    content = gw.call("GET", f"/api/v2/assets/{body['id']}/content")
    assert content.content == PNG
    path.write_bytes(b"changed later")  # the asset is a copy: it keeps the registered bytes
    assert gw.call("GET", f"/api/v2/assets/{body['id']}/content").content == PNG
    found = gw.call("POST", "/api/v2/assets/from-hash", json={"hash": body["hash"]})
    assert found.json()["id"] == body["id"]


def test_a_file_in_the_output_folder_is_accepted(gw: Gateway) -> None:
    out = gw.service.output_dir / "job1"
    out.mkdir(parents=True)
    (out / "img.png").write_bytes(PNG + b"out")
    answer = gw.call("POST", "/api/v2/assets/from-path", json={"path": str(out / "img.png")})
    assert (answer.status_code, answer.json()["size_bytes"]) == (201, len(PNG) + 3)


@pytest.mark.parametrize("path", ["relative/frame.png", "", "OUTSIDE"])
def test_paths_outside_the_folders_are_refused_without_naming_them(
    gw: Gateway, tmp_path: Path, path: str
) -> None:
    if path == "OUTSIDE":
        path = str(tmp_path / "elsewhere.png")
        Path(path).write_bytes(PNG)
    answer = gw.call("POST", "/api/v2/assets/from-path", json={"path": path})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_request")
    assert str(gw.assets.input_dir) not in answer.text
    assert str(gw.service.output_dir) not in answer.text


def test_a_dotdot_path_out_of_the_input_folder_is_refused(gw: Gateway, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for clients")
    _input_file(gw, "frame.png")
    sneaky = gw.assets.input_dir / "renders" / ".." / ".." / "secret.txt"
    answer = gw.call("POST", "/api/v2/assets/from-path", json={"path": str(sneaky)})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_request")


def test_a_link_leading_out_of_the_input_folder_is_refused(gw: Gateway, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for clients")
    link = _input_file(gw, "frame.png").with_name("link.png")
    os.symlink(secret, link)
    answer = gw.call("POST", "/api/v2/assets/from-path", json={"path": str(link)})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_request")


def test_missing_files_and_folders_are_404_blob_not_found(gw: Gateway) -> None:
    folder = _input_file(gw, "frame.png").parent
    for path in (folder / "nope.png", folder):
        answer = gw.call("POST", "/api/v2/assets/from-path", json={"path": str(path)})
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "blob_not_found")


def test_a_file_over_the_upload_limit_is_413(gw: Gateway) -> None:
    path = _input_file(gw, "big.png", PNG + b"\0" * (gw.assets.max_bytes + 1))
    answer = gw.call("POST", "/api/v2/assets/from-path", json={"path": str(path)})
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "payload_too_large")


def test_from_path_needs_the_admin_scope(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    user = keys.create("user", scopes=frozenset({SUBMIT, READ})).token
    admin = keys.create("ops", scopes=frozenset({ADMIN, SUBMIT, READ})).token
    gw = Gateway(tmp_path, keys=keys)
    path = _input_file(gw, "frame.png")
    body = {"path": str(path)}
    refused = gw.call(
        "POST", "/api/v2/assets/from-path", json=body, headers={"Authorization": f"Bearer {user}"}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    taken = gw.call(
        "POST", "/api/v2/assets/from-path", json=body, headers={"Authorization": f"Bearer {admin}"}
    )
    assert taken.status_code == 201, taken.text
