"""`nodes add|remove|list` on a workspace, with local git repositories as node sources."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from comfyfleet.errors import CustomNodeError, WorkspaceError
from comfyfleet.provision import (
    InstallSettings,
    RecordingReporter,
    add_node,
    node_rows,
    read_lock,
    remove_node,
    split_ref,
)
from comfyfleet.provision._lock import ComfyUILock, Lock, TorchLock, write_lock
from comfyfleet.provision._node_ops import resolve_commit
from comfyfleet.workspace import Workspace
from tests.unit.gitrepo import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def installed_workspace(root: Path) -> Workspace:
    """A workspace that looks installed: a marker, a venv interpreter, and a lock."""
    ws = Workspace(root, root / "models", root / "input", root / "output")
    ws.prepare()
    ws.python.parent.mkdir(parents=True)
    ws.python.symlink_to(sys.executable)
    ws.installed_marker.write_text("{}", encoding="utf-8")
    lock = Lock(
        comfyui=ComfyUILock("path:/x", "0.3.75", "0" * 64),
        python="3.12.0",
        torch=TorchLock("cpu", "cpu", "2.13.0+cpu", None),
        packages={"torch": "2.13.0+cpu", "aiohttp": "3.9.0"},
    )
    write_lock(ws.lock_file, lock)
    return ws


def make_repo(folder: Path) -> tuple[str, str]:
    """A node repository with a tag `v1` and a later commit on `main`; returns both commits."""
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n", encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=folder)
    git("add", ".", cwd=folder)
    git("commit", "-q", "-m", "first", cwd=folder)
    git("tag", "-a", "v1", "-m", "release", cwd=folder)
    first = git("rev-parse", "HEAD", cwd=folder)
    (folder / "later.py").write_text("X = 1\n", encoding="utf-8")
    git("add", ".", cwd=folder)
    git("commit", "-q", "-m", "later", cwd=folder)
    return first, git("rev-parse", "HEAD", cwd=folder)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return installed_workspace(tmp_path / "ws")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("https://github.com/org/nodes", ("https://github.com/org/nodes", None)),
        ("https://github.com/org/nodes@v1.2", ("https://github.com/org/nodes", "v1.2")),
        ("git@github.com:org/nodes", ("git@github.com:org/nodes", None)),
        ("git@github.com:org/nodes@main", ("git@github.com:org/nodes", "main")),
        ("https://user@host.example/org/nodes", ("https://user@host.example/org/nodes", None)),
    ],
)
def test_split_ref(text: str, parts: tuple[str, str | None]) -> None:
    assert split_ref(text) == parts


def test_refs_resolve_to_commits(tmp_path: Path) -> None:
    first, later = make_repo(tmp_path / "repo")
    url = f"file://{tmp_path / 'repo'}"
    assert resolve_commit(url, "v1") == first  # an annotated tag: the commit, not the tag object
    assert resolve_commit(url, "main") == later
    assert resolve_commit(url, None) == later
    assert resolve_commit(url, first.upper()) == first  # a full id needs no round trip
    with pytest.raises(CustomNodeError, match="has no branch or tag 'v9'"):
        resolve_commit(url, "v9")
    with pytest.raises(CustomNodeError, match="give the full 40-character id"):
        resolve_commit(url, first[:10])
    with pytest.raises(CustomNodeError, match="cannot read the repository"):
        resolve_commit(f"file://{tmp_path / 'nothing'}", None)


def test_add_pins_installs_and_records(tmp_path: Path, ws: Workspace) -> None:
    first, _ = make_repo(tmp_path / "good-nodes")
    url = f"file://{tmp_path / 'good-nodes'}"
    spec, node, path = add_node(InstallSettings(), ws, f"{url}@v1", reporter=RecordingReporter())
    assert (spec.name, spec.ref, node.commit) == ("good-nodes", first, first)
    assert path == ws.root / "nodes.yaml"
    assert yaml.safe_load(path.read_text())["nodes"] == [{"git": url, "ref": first}]
    folder = ws.custom_nodes_dir / "good-nodes"
    assert (folder / "__init__.py").is_file() and not (folder / "later.py").exists()
    (locked,) = read_lock(ws.lock_file).custom_nodes
    assert (locked.name, locked.commit) == ("good-nodes", first)
    assert read_lock(ws.lock_file).packages == {"torch": "2.13.0+cpu", "aiohttp": "3.9.0"}

    (row,) = node_rows(InstallSettings(), ws)
    assert (row.name, row.origin, row.pinned, row.installed, row.state) == (
        "good-nodes",
        "list",
        first,
        first,
        "installed",
    )
    with pytest.raises(CustomNodeError, match="'good-nodes' is already in the nodes list"):
        add_node(InstallSettings(), ws, url, reporter=RecordingReporter())


def test_add_keeps_other_entries_and_writes_to_the_configured_list(
    tmp_path: Path, ws: Workspace
) -> None:
    _, later = make_repo(tmp_path / "repos" / "b")
    (tmp_path / "conf" / "mine").mkdir(parents=True)
    own = tmp_path / "conf" / "list.yaml"
    own.write_text("nodes:\n  - path: ./mine\n", encoding="utf-8")
    settings = InstallSettings(nodes_file=own)
    add_node(settings, ws, str(tmp_path / "repos" / "b"), ref="main", reporter=RecordingReporter())
    assert yaml.safe_load(own.read_text())["nodes"] == [
        {"path": "./mine"},
        {"git": str(tmp_path / "repos" / "b"), "ref": later},
    ]
    assert not (ws.root / "nodes.yaml").exists()
    states = {row.name: row.state for row in node_rows(settings, ws)}
    assert states == {"mine": "not installed", "b": "installed"}


def test_a_folder_comfyfleet_did_not_install_is_moved_aside_first(
    tmp_path: Path, ws: Workspace
) -> None:
    make_repo(tmp_path / "nodes-x")
    stray = ws.custom_nodes_dir / "nodes-x"
    stray.mkdir()
    (stray / "mine.txt").write_text("keep me", encoding="utf-8")
    reporter = RecordingReporter()
    add_node(InstallSettings(), ws, f"file://{tmp_path / 'nodes-x'}", reporter=reporter)
    (parked,) = (ws.state_dir / "removed-nodes").iterdir()
    assert (parked / "mine.txt").read_text() == "keep me"
    assert "did not install" in reporter.warnings[0]


def test_add_needs_an_installed_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, tmp_path / "m", tmp_path / "i", tmp_path / "o")
    with pytest.raises(WorkspaceError, match="not installed"):
        add_node(InstallSettings(), ws, "https://example.org/x/y", reporter=RecordingReporter())


def test_remove_moves_the_folder_aside_and_updates_list_and_lock(
    tmp_path: Path, ws: Workspace
) -> None:
    make_repo(tmp_path / "a-nodes")
    make_repo(tmp_path / "b-nodes")
    for name in ("a-nodes", "b-nodes"):
        add_node(InstallSettings(), ws, f"file://{tmp_path / name}", reporter=RecordingReporter())
    listed, moved = remove_node(InstallSettings(), ws, "a-nodes", reporter=RecordingReporter())
    assert listed and moved is not None and moved.parent == ws.state_dir / "removed-nodes"
    assert (moved / "__init__.py").is_file()
    assert not (ws.custom_nodes_dir / "a-nodes").exists()
    entries = yaml.safe_load((ws.root / "nodes.yaml").read_text())["nodes"]
    assert [e["git"].rsplit("/", 1)[-1] for e in entries] == ["b-nodes"]
    assert [n.name for n in read_lock(ws.lock_file).custom_nodes] == ["b-nodes"]
    with pytest.raises(CustomNodeError, match=r"no custom node 'a-nodes' \(listed: b-nodes\)"):
        remove_node(InstallSettings(), ws, "a-nodes", reporter=RecordingReporter())


def test_a_node_of_a_configured_set_cannot_be_removed_alone(ws: Workspace) -> None:
    settings = InstallSettings(node_sets=("video",))
    with pytest.raises(CustomNodeError, match="comes from the node set 'video'"):
        remove_node(settings, ws, "ComfyUI-VideoHelperSuite", reporter=RecordingReporter())


def test_removing_an_own_entry_that_shadows_a_set_says_the_set_comes_back(
    tmp_path: Path, ws: Workspace
) -> None:
    make_repo(tmp_path / "ComfyUI-KJNodes")
    settings = InstallSettings(node_sets=("popular",))
    add_node(settings, ws, f"file://{tmp_path / 'ComfyUI-KJNodes'}", reporter=RecordingReporter())
    rows = {row.name: row for row in node_rows(settings, ws)}
    assert (rows["ComfyUI-KJNodes"].origin, rows["ComfyUI-KJNodes"].state) == ("list", "installed")
    reporter = RecordingReporter()
    listed, _ = remove_node(settings, ws, "ComfyUI-KJNodes", reporter=reporter)
    assert listed
    assert reporter.warnings == [
        "the node set 'popular' carries 'ComfyUI-KJNodes' too: the next install puts the set's "
        "pin back"
    ]
    rows = {row.name: row for row in node_rows(settings, ws)}
    assert (rows["ComfyUI-KJNodes"].origin, rows["ComfyUI-KJNodes"].state) == (
        "set popular",
        "not installed",
    )


def test_list_shows_sets_drift_and_unlisted_folders(tmp_path: Path, ws: Workspace) -> None:
    first, later = make_repo(tmp_path / "drift-nodes")
    url = f"file://{tmp_path / 'drift-nodes'}"
    add_node(InstallSettings(), ws, url, ref="v1", reporter=RecordingReporter())
    listed = ws.root / "nodes.yaml"
    listed.write_text(listed.read_text().replace(first, later), encoding="utf-8")
    (ws.custom_nodes_dir / "hand-copied").mkdir()
    marker = json.loads((ws.custom_nodes_dir / "drift-nodes" / ".comfyfleet-node.json").read_text())
    assert marker["commit"] == first

    rows = {row.name: row for row in node_rows(InstallSettings(node_sets=("video",)), ws)}
    assert rows["drift-nodes"].state == "differs from the pin"
    assert (rows["drift-nodes"].pinned, rows["drift-nodes"].installed) == (later, first)
    vhs = rows["ComfyUI-VideoHelperSuite"]
    assert (vhs.origin, vhs.state, vhs.installed) == ("set video", "not installed", None)
    stray = rows["hand-copied"]
    assert (stray.origin, stray.state) == ("not listed", "the next install moves it aside")


def test_a_path_node_whose_folder_changed_says_so(tmp_path: Path, ws: Workspace) -> None:
    source = tmp_path / "local-nodes"
    source.mkdir()
    (source / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n", encoding="utf-8")
    spec, node, _ = add_node(InstallSettings(), ws, str(source), reporter=RecordingReporter())
    assert (spec.kind, node.commit) == ("path", None)
    (row,) = node_rows(InstallSettings(), ws)
    assert (row.state, row.installed) == ("installed", node.sha256[:12])
    (source / "more.py").write_text("X = 2\n", encoding="utf-8")
    (row,) = node_rows(InstallSettings(), ws)
    assert row.state == "source folder changed since the install"
