"""Workflows saved from the ComfyUI editor (UI format), sent to a live `comfyfleet serve` with a
real CPU instance: the gateway converts them with the node definitions that instance registered
and queues what ComfyUI's own editor queues for the same file (the reference fixtures), and a
model-free one runs to its image."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, png_size, serve_config
from tests.ui_workflows import expected_graph, references

pytestmark = pytest.mark.comfyui

CONVERTED = [
    "default_workflow",
    "case:mute_bypass_reroute",
    "case:subgraphs",
    "case:group_node",
    "01_qwen_t2i_subgraphed",
    "video_wan2_2_14B_i2v",
]
"""The editor's default, the hand-made cases (reroutes, mute, bypass, nested subgraphs, a group
node) and two templates (subgraphs with promoted widgets; many bypassed nodes)."""


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("ui-workflows"))
    serve_config(ws)
    started = Server(ws, instances=1).start()
    try:
        yield started
    finally:
        started.close()


def _queued_graph(server: Server, job_id: str) -> dict[str, Any]:
    """The graph the fleet queued for a job, as ComfyUI's history shows it (once it ended: these
    graphs want models the test instance does not have)."""
    server.wait_all([job_id], 60)
    entry = server.http.get(f"/api/history/{job_id}").json()[job_id]
    graph: dict[str, Any] = entry["prompt"][2]
    return graph


@pytest.mark.parametrize("name", CONVERTED)
def test_the_fleet_queues_what_the_editor_queues(server: Server, name: str) -> None:
    workflow = references()["workflows"][name]["workflow"]
    answer = server.http.post("/v1/jobs", json={"workflow": workflow})
    assert answer.status_code == 202, answer.text
    assert _queued_graph(server, answer.json()["id"]) == expected_graph(name)


def _model_free(width: int, prefix: str) -> dict[str, Any]:
    """EmptyImage (its width fed by a PrimitiveNode) -> Reroute -> ImageInvert (bypassed) ->
    SaveImage, as the editor saves it."""
    widget = {"type": "INT", "widget": {"name": "width"}}
    return {
        "version": 0.4,
        "links": [
            [1, 1, 0, 3, 0, "IMAGE"],
            [2, 2, 0, 1, 0, "INT"],
            [3, 3, 0, 4, 0, "IMAGE"],
            [4, 4, 0, 5, 0, "IMAGE"],
        ],
        "nodes": [
            {
                "id": 1,
                "type": "EmptyImage",
                "mode": 0,
                "inputs": [{"name": "width", "link": 2, **widget}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
                "widgets_values": [8, 16, 1, time.time_ns() % 0xFFFFFF],
            },
            {
                "id": 2,
                "type": "PrimitiveNode",
                "mode": 0,
                "outputs": [
                    {"name": "INT", "type": "INT", "links": [2], "widget": {"name": "width"}}
                ],
                "widgets_values": [width, "fixed"],
            },
            {
                "id": 3,
                "type": "Reroute",
                "mode": 0,
                "inputs": [{"name": "", "type": "*", "link": 1}],
                "outputs": [{"name": "", "type": "IMAGE", "links": [3]}],
            },
            {
                "id": 4,
                "type": "ImageInvert",
                "mode": 4,
                "inputs": [{"name": "image", "type": "IMAGE", "link": 3}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}],
            },
            {
                "id": 5,
                "type": "SaveImage",
                "mode": 0,
                "inputs": [{"name": "images", "type": "IMAGE", "link": 4}],
                "widgets_values": [prefix + "_%EmptyImage.width%"],
            },
        ],
    }


def test_a_ui_workflow_runs_on_the_fleet(server: Server) -> None:
    answer = server.http.post(
        "/v1/jobs", json={"workflow": _model_free(48, "ui")}, headers={"Prefer": "wait=120"}
    )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded", job
    (image,) = [o for o in job["outputs"] if o["kind"] == "images"]
    assert "ui_48_" in image["url"]  # the file name prefix took the primitive's width
    data = server.http.get(image["url"]).raise_for_status().content
    assert png_size(data) == (48, 16)


def test_a_ui_workflow_with_a_node_type_the_fleet_lacks_is_refused_by_name(server: Server) -> None:
    workflow = _model_free(8, "never")
    workflow["nodes"][3] = {**workflow["nodes"][3], "type": "NotOnThisFleet", "mode": 0}
    answer = server.http.post("/v1/jobs", json={"workflow": workflow})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "node 4 (NotOnThisFleet): no instance of this fleet has this node type"
    )
