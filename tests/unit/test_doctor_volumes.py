"""`comfyfleet doctor`'s volume checks and its SQLite/local-storage reachability lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.provision import Check, volume_checks
from comfyfleet.roles._reach import storage_check, store_check
from comfyfleet.storage import StorageSettings
from comfyfleet.workspace import Workspace

as_root = os.geteuid() == 0


def workspace(root: Path) -> Workspace:
    ws = Workspace(root, root / "models", root / "input", root / "output")
    ws.prepare()
    return ws


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_a_prepared_workspace_passes(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    (ws.models_dir / "checkpoints").mkdir()
    checks = by_name(volume_checks(ws, min_free_bytes=1))
    assert checks["models root"] == Check(
        "models root", "ok", f"{ws.models_dir} (on the workspace's disk)"
    )
    assert checks["models writable"].level == "ok"
    for name in ("output", "input", "instance temp", "logs", "state"):
        assert checks[name].level == "ok", checks[name]
    assert checks["free space"].level == "ok"
    assert not any(tmp_path.rglob(".comfyfleet-doctor-*"))  # the probe files are gone


def test_missing_models_root_fails_and_empty_one_warns(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    assert by_name(volume_checks(ws))["models root"].level == "warn"  # empty
    ws.models_dir.rmdir()
    (check,) = [c for c in volume_checks(ws) if c.name == "models root"]
    assert check == Check(
        "models root", "fail", f"{ws.models_dir} does not exist (is its volume mounted?)"
    )


def test_a_required_models_mount_that_is_a_plain_folder_fails(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    check = by_name(volume_checks(ws, require_models_mount=True))["models root"]
    assert check.level == "fail" and "is not a mount point" in check.detail


def test_a_models_root_that_is_a_mount_point_passes_the_mount_requirement(tmp_path: Path) -> None:
    # /proc is a mount point on every Linux machine: a stand-in for a mounted models volume
    ws = Workspace(tmp_path, Path("/proc"), tmp_path / "i", tmp_path / "o")
    check = by_name(volume_checks(ws, require_models_mount=True))["models root"]
    assert check == Check("models root", "ok", "/proc (a volume of its own)")


def test_too_little_free_space_fails_naming_the_folders(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    (free,) = [c for c in volume_checks(ws, min_free_bytes=1 << 60) if c.name == "free space"]
    assert free.level == "fail"
    assert free.detail.endswith(
        "(output, input, instance temp, logs, state, models): below the 1073741824.0 GiB asked for"
    )


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` refuses new files, even to root (immutable flag), where the machine allows."""
    if not as_root:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], check=False).returncode:
        pytest.skip("root, and no immutable flag here: nothing makes a folder unwritable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_an_unwritable_output_folder_fails_and_models_only_warn(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    with read_only(ws.output_dir), read_only(ws.models_dir):
        checks = by_name(volume_checks(ws))
    assert checks["output"].level == "fail"
    assert checks["output"].detail.startswith(f"{ws.output_dir} is not writable (")
    assert checks["models writable"].level == "warn"
    assert "model downloads will fail" in checks["models writable"].detail
    assert checks["input"].level == "ok"


def test_sqlite_store_lines(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    fresh = asyncio.run(store_check("sqlite://", ws))
    assert fresh == Check(
        "job store", "ok", f"SQLite {ws.state_dir / 'jobs.db'} (created at the first start)"
    )
    assert not (ws.state_dir / "jobs.db").exists()  # nothing created by looking
    with sqlite3.connect(ws.state_dir / "jobs.db") as db:
        db.execute("CREATE TABLE t (x)")
    assert asyncio.run(store_check("sqlite://", ws)).level == "ok"
    (ws.state_dir / "junk.db").write_bytes(b"this is not a database" * 100)
    broken = asyncio.run(store_check("sqlite:///junk.db", ws))
    assert broken.level == "fail" and "cannot be read" in broken.detail
    blocked = tmp_path / "file"
    blocked.write_text("x")
    nowhere = asyncio.run(store_check(f"sqlite:///{blocked}/sub/jobs.db", ws))
    assert nowhere.level == "fail" and "cannot be created" in nowhere.detail
    assert asyncio.run(store_check("memory://", ws)).level == "warn"
    assert asyncio.run(store_check("mysql://x", ws)).level == "fail"


def test_local_storage_is_looked_at_not_created(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    elsewhere = tmp_path / "outputs" / "deep"
    check = asyncio.run(storage_check("archive", StorageSettings(url=f"file://{elsewhere}"), ws))
    assert check == Check(
        "output storage 'archive'", "ok", f"file://{elsewhere}: local folder {elsewhere}"
    )
    assert not elsewhere.exists()
