"""`comfyfleet run` as a user runs it: against a server, and with an ephemeral one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.comfyui_env import workspace_sharing
from tests.integration.fleet import cli
from tests.integration.serve import PNG_SIGNATURE, Server, model_free_graph, serve_config

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def ws(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("run"))
    serve_config(workspace)
    return workspace


@pytest.fixture(scope="module")
def server(ws: Path) -> Iterator[Server]:
    srv = Server(ws, instances=1).start()
    yield srv
    srv.close()


def test_run_writes_the_outputs_and_applies_sets(server: Server, tmp_path: Path) -> None:
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(model_free_graph(1, "run")))
    color = time.time_ns() % 0xFFFFFF
    out = cli(
        "run",
        workflow,
        "--set",
        f"1.color={color}",
        "--set",
        "1.width=48",
        "--out",
        tmp_path / "out",
        "--server",
        server.url,
    )
    assert "succeeded" in out.stdout
    [png] = list((tmp_path / "out").rglob("*.png"))
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert int.from_bytes(png.read_bytes()[16:20], "big") == 48


def test_run_exits_non_zero_with_the_node_error(server: Server, tmp_path: Path) -> None:
    workflow = tmp_path / "fail.json"
    workflow.write_text(
        json.dumps(
            {"1": {"class_type": "FleetFail", "inputs": {"message": "bad prompt", "seed": 3}}}
        )
    )
    out = cli(
        "run", workflow, "--server", server.url, "--set", f"1.seed={time.time_ns()}", check=False
    )
    assert out.returncode == 1
    assert "node 1 (FleetFail): RuntimeError: bad prompt" in out.stdout


def test_run_refuses_a_bad_set(server: Server, tmp_path: Path) -> None:
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(model_free_graph(1)))
    out = cli("run", workflow, "--set", "42.text=x", "--server", server.url, check=False)
    assert out.returncode == 1 and "the workflow has no node '42'" in out.stderr


def test_run_starts_an_ephemeral_server_when_none_is_given(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("ephemeral"))
    serve_config(ws)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(model_free_graph(time.time_ns(), "ephemeral")))
    out = cli(
        "run",
        workflow,
        "--workspace",
        ws,
        "--out",
        tmp_path / "out",
        env={"COMFYFLEET_FLEET__BASE_PORT": "19500"},
    )
    assert "succeeded" in out.stdout
    assert len(list((tmp_path / "out").rglob("*.png"))) == 1
