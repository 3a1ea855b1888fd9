"""`comfyfleet doctor` against real backends: PostgreSQL up and a closed port, S3 (moto) with
its bucket and without, and the installed ComfyUI's volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.comfyui_env import workspace_sharing
from tests.integration.fleet import cli
from tests.storage_servers import S3Server, free_port

pytestmark = pytest.mark.comfyui


@pytest.fixture
def ws(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("doctor"))
    (workspace / "models" / "checkpoints").mkdir(parents=True)
    for folder in ("output", "input", "instances", "logs"):  # as the first start leaves them
        (workspace / folder).mkdir(exist_ok=True)
    return workspace


def doctor(ws: Path, settings: dict[str, Any], *args: str) -> tuple[int, dict[str, str]]:
    """Run the doctor with `settings` as the workspace's file; its exit code and its lines by
    check name (the mark kept in front)."""
    (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    out = cli("doctor", "-w", ws, *args, check=False)
    lines = {line[2:17].strip(): line for line in out.stdout.splitlines() if line[:1] in "✓!✗"}
    return out.returncode, lines


def s3_settings(s3: S3Server, bucket: str) -> dict[str, Any]:
    return {
        k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
        for k, v in s3.settings(bucket).model_dump(exclude_defaults=True).items()
    }


def test_postgresql_and_s3_that_answer_pass(ws: Path, postgres: str, s3: S3Server) -> None:
    s3.client().create_bucket(Bucket="doctor-ok")
    code, lines = doctor(
        ws, {"serve": {"store": postgres}, "storage": s3_settings(s3, "doctor-ok")}
    )
    assert code == 0, lines
    assert lines["job store"].startswith("✓ job store")
    assert "answers (PostgreSQL " in lines["job store"]
    assert lines["output storage"] == "✓ output storage  s3://doctor-ok/ answers"
    assert lines["models root"].startswith("✓ models root")
    assert lines["output"] == f"✓ output          {ws / 'output'} is writable"
    assert lines["free space"].startswith("✓ free space")


def test_a_closed_postgresql_port_and_a_missing_bucket_fail(ws: Path, s3: S3Server) -> None:
    port = free_port()
    store = f"postgresql://comfyfleet@127.0.0.1:{port}/jobs"
    code, lines = doctor(ws, {"serve": {"store": store}, "storage": s3_settings(s3, "no-such")})
    assert code == 1
    assert lines["job store"].startswith(f"✗ job store       cannot reach the job store {store}: ")
    assert lines["output storage"].startswith("✗ output storage  s3://no-such/: ")
    assert "no-such" in lines["output storage"] and "does not exist" in lines["output storage"]


def test_free_space_and_models_mount_requirements_fail(ws: Path) -> None:
    code, lines = doctor(ws, {}, "--min-free-gb", "1000000", "--models-mount", "--offline")
    assert code == 1
    assert lines["free space"].startswith("✗ free space")
    assert "below the 1000000.0 GiB asked for" in lines["free space"]
    assert (
        lines["models root"].startswith("✗ models root")
        and "not a mount point" in (lines["models root"])
    )
    assert "job store" not in lines  # --offline
