"""`comfyfleet export`, run as a user runs it: the committed deployment files are exactly what
it writes for the default configuration (so they never drift from the code), a user's settings
file shapes what it writes, and a target it does not know is an error that names those it does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy_cases import COMMITTED, REFERENCE_EXPORT


def comfyfleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("COMFYFLEET_")}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "comfyfleet", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


HAND_KEPT = ("grafana",)
"""Folders of deploy/ that no export writes: the Grafana dashboard is kept by hand (its names are
checked against the exported metrics by tests/unit/test_grafana_dashboard.py)."""


def tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        # deploy/README.md is written by hand too
        if path.is_file()
        and path.parent != root
        and path.relative_to(root).parts[0] not in HAND_KEPT
    }


def test_the_committed_files_are_what_export_writes_for_the_default_settings(
    tmp_path: Path,
) -> None:
    done = comfyfleet(*REFERENCE_EXPORT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    regenerated, committed = tree(tmp_path / "deploy"), tree(COMMITTED)
    assert sorted(regenerated) == sorted(committed)
    for name, text in regenerated.items():
        assert committed[name] == text, (
            f"deploy/{name} differs from what `comfyfleet {' '.join(REFERENCE_EXPORT)}` "
            "writes: run that command from the repository root and commit the result"
        )


def test_export_writes_one_target_for_the_settings_file_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "comfyfleet.yaml").write_text(
        "serve:\n  port: 9191\n  max_queued: 40\nfleet:\n  gpus: [0, 1, 2, 3]\n", encoding="utf-8"
    )
    done = comfyfleet("export", "k8s", "--out", "manifests", "--variant", "minimal", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in (tmp_path / "manifests").iterdir()) == [
        "agent.yaml",
        "gateway.yaml",
        "secrets.example.env",
        "settings.yaml",
    ]
    configmap = yaml.safe_load((tmp_path / "manifests" / "settings.yaml").read_text())
    assert yaml.safe_load(configmap["data"]["comfyfleet.yaml"]) == {
        "fleet": {"gpus": [0, 1, 2, 3]},
        "serve": {"port": 9191, "max_queued": 40},
    }
    agent = list(yaml.safe_load_all((tmp_path / "manifests" / "agent.yaml").read_text()))[1]
    container = agent["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "comfyfleet:0.1.0-minimal"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 4}
    assert "note: serve.store is not PostgreSQL" in done.stdout


def test_an_unknown_target_is_an_error_naming_the_supported_ones(tmp_path: Path) -> None:
    done = comfyfleet("export", "helm", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: unknown export target 'helm'",
        "  hint: supported: docker, compose, systemd, supervisord, k8s, or all for every one",
    ]
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_variant_is_an_error_naming_the_variants(tmp_path: Path) -> None:
    done = comfyfleet("export", "compose", "--variant", "huge", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: unknown image variant 'huge'",
        "  hint: choose one of minimal, standard, full",
    ]


def test_a_missing_target_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    done = comfyfleet("export", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "Error: Missing argument 'TARGET'."
    assert "Traceback" not in done.stderr
