"""Files kept in plain git publish no sha256, only their git blob id: a download held to one
(as the shipped TAESD preset is) must match what git itself computes, and a wrong body must fail
and leave nothing under the final name."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from comfyfleet.models import (
    Catalog,
    ChecksumMismatch,
    Downloader,
    DownloadItem,
    DownloadResult,
    ModelFolders,
    ModelLibrary,
    ModelSettings,
    parse_manifest,
)
from tests.model_file_server import ModelFileServer, write_random_file

SIZE = 4_912_345  # about a TAESD decoder's size


def git_hash_object(path: Path) -> str:
    """What `git hash-object` says: the blob id git would give the file."""
    done = subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def fetch(url: str, dest: Path, blob: str) -> DownloadResult:
    settings = ModelSettings(free_space_margin_bytes=0, chunk_bytes=64 * 1024)
    item = DownloadItem(url, dest, git_blob=blob)
    return asyncio.run(Downloader(settings, env={}).download(item))


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    write_random_file(root / "taesd_decoder.pth", SIZE, seed=11)
    return root


def test_git_blob_id_is_checked_before_the_rename(served: Path, tmp_path: Path) -> None:
    blob = git_hash_object(served / "taesd_decoder.pth")
    dest = tmp_path / "vae_approx" / "taesd_decoder.pth"
    with ModelFileServer(served) as server:
        result = fetch(server.url("taesd_decoder.pth"), dest, blob)
    assert dest.read_bytes() == (served / "taesd_decoder.pth").read_bytes()
    assert result.size == SIZE and result.sha256 is not None


def test_a_body_with_another_blob_id_fails_and_leaves_nothing(served: Path, tmp_path: Path) -> None:
    blob = git_hash_object(served / "taesd_decoder.pth")
    dest = tmp_path / "taesd_decoder.pth"
    with ModelFileServer(served, wrong_body=True) as server:
        with pytest.raises(ChecksumMismatch) as caught:
            fetch(server.url("taesd_decoder.pth"), dest, blob)
    assert f"git blob id mismatch: expected {blob}, got " in caught.value.message
    assert not dest.exists() and not Path(f"{dest}.part").exists()


def test_a_preset_held_to_blob_ids_installs_and_verifies(served: Path, tmp_path: Path) -> None:
    blob = git_hash_object(served / "taesd_decoder.pth")
    with ModelFileServer(served) as server:
        manifest = parse_manifest(
            f"""
presets:
  previews:
    files:
      - {{source: "{server.url("taesd_decoder.pth")}", type: vae_approx,
         filename: taesd_decoder.pth, git_blob: "{blob.upper()}"}}
""",
            "previews.yaml",
        )
        library = ModelLibrary(
            ModelFolders(tmp_path / "models"),
            ModelSettings(free_space_margin_bytes=0),
            catalog=Catalog.from_manifests([manifest]),
            state_dir=tmp_path / "state",
        )
        asyncio.run(library.install_preset("previews"))
    (status,) = library.presets(verify=True)
    assert [f.state for f in status.files] == ["ok"]
    (library.folders.primary("vae_approx") / "taesd_decoder.pth").write_bytes(b"other")
    (status,) = library.presets(verify=True)
    assert [f.state for f in status.files] == ["wrong_hash"]
