"""Custom nodes: reading the nodes list, and installing exactly what it names."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.errors import CustomNodeError
from comfyfleet.provision._nodes import (
    MARKER,
    InstalledNode,
    NodeSpec,
    install_nodes,
    load_nodes_file,
)
from comfyfleet.provision._report import InstallLog, RecordingReporter
from comfyfleet.provision._venv import Pip
from tests.unit.gitrepo import git

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def nodes_file(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nodes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- load_nodes_file ----------------------------------------------------------------------------


def test_git_and_path_entries(tmp_path: Path) -> None:
    path = nodes_file(
        tmp_path / "conf",
        "nodes:\n"
        "  - git: https://github.com/org/some-nodes.git\n"
        "    ref: v1.4.0\n"
        "  - path: ./local/my-nodes\n"
        "  - path: /opt/shared-nodes\n"
        "    name: shared\n"
        "  - git: https://github.com/org/other-nodes/\n",
    )
    assert load_nodes_file(path) == [
        NodeSpec("some-nodes", "git", "https://github.com/org/some-nodes.git", "v1.4.0"),
        NodeSpec("my-nodes", "path", str(tmp_path / "conf" / "local" / "my-nodes")),
        NodeSpec("shared", "path", "/opt/shared-nodes"),
        NodeSpec("other-nodes", "git", "https://github.com/org/other-nodes/"),
    ]


def test_relative_path_is_taken_from_the_list_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = nodes_file(tmp_path / "conf", "nodes:\n  - path: ../nodes/a\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (spec,) = load_nodes_file(path)
    assert spec.location == str(tmp_path / "nodes" / "a")
    assert spec.name == "a"


def test_a_bare_list_is_accepted(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, "- git: https://example.org/x/foo.git\n")
    assert [spec.name for spec in load_nodes_file(path)] == ["foo"]


@pytest.mark.parametrize("text", ["", "nodes:\n", "nodes: []\n"])
def test_empty_lists(tmp_path: Path, text: str) -> None:
    assert load_nodes_file(nodes_file(tmp_path, text)) == []


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = nodes_file(
        tmp_path,
        "nodes:\n  - git: https://a.example/x/nodes.git\n  - git: https://b.example/y/nodes\n",
    )
    with pytest.raises(CustomNodeError, match="'nodes' is listed twice") as info:
        load_nodes_file(path)
    assert str(path) in str(info.value)


def test_a_name_makes_duplicates_distinct(tmp_path: Path) -> None:
    path = nodes_file(
        tmp_path,
        "nodes:\n  - git: https://a.example/x/nodes.git\n"
        "  - git: https://b.example/y/nodes\n    name: nodes-b\n",
    )
    assert [spec.name for spec in load_nodes_file(path)] == ["nodes", "nodes-b"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("git: https://x.example/a.git\n    branch: main", r"unknown keys \['branch'\]"),
        ("git: https://x.example/a.git\n    path: ./a", "exactly one of 'git:' and 'path:'"),
        ("ref: v1", "exactly one of 'git:' and 'path:'"),
        ("git: https://x.example/a.git\n    name: bad name", "'bad name' is not a usable"),
        ("git: https://x.example/a.git\n    name: ../up", "'../up' is not a usable"),
        ("path: ./a\n    name: .hidden", "'.hidden' is not a usable"),
    ],
)
def test_bad_entry_names_the_file_and_the_entry(tmp_path: Path, entry: str, message: str) -> None:
    path = nodes_file(tmp_path, f"nodes:\n  - git: https://x.example/ok.git\n  - {entry}\n")
    with pytest.raises(CustomNodeError, match=message) as info:
        load_nodes_file(path)
    assert f"{path} entry 2" in str(info.value)


def test_entry_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, "nodes:\n  - https://x.example/a.git\n")
    with pytest.raises(CustomNodeError, match="needs 'git:' or 'path:'") as info:
        load_nodes_file(path)
    assert f"{path} entry 1" in str(info.value)


def test_nodes_that_is_not_a_list(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, "nodes:\n  git: https://x.example/a.git\n")
    with pytest.raises(CustomNodeError, match="expected a list") as info:
        load_nodes_file(path)
    assert str(path) in str(info.value)


def test_missing_and_unparsable_lists(tmp_path: Path) -> None:
    with pytest.raises(CustomNodeError, match="cannot read nodes list"):
        load_nodes_file(tmp_path / "missing.yaml")
    with pytest.raises(CustomNodeError, match="cannot read nodes list"):
        load_nodes_file(nodes_file(tmp_path, "nodes: [unclosed\n"))


def test_misspelled_nodes_key_is_refused(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, "node:\n  - git: https://x.example/a.git\n")
    with pytest.raises(CustomNodeError, match="node"):
        load_nodes_file(path)


def test_numeric_looking_ref_is_not_mangled(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, "nodes:\n  - git: https://x.example/a.git\n    ref: 1.10\n")
    try:
        (spec,) = load_nodes_file(path)
    except CustomNodeError as exc:  # refusing it ("quote the ref") is fine too
        assert "ref" in str(exc)
        return
    assert spec.ref == "1.10"


# --- install_nodes: helpers ---------------------------------------------------------------------


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[InstallLog]:
    with InstallLog(tmp_path / "logs" / "install.log") as install_log:
        yield install_log


class Nodes:
    """`install_nodes` into one workspace, with a pip that must never run."""

    def __init__(self, root: Path, log: InstallLog, reporter: RecordingReporter) -> None:
        self.custom_nodes = root / "ws" / "custom_nodes"
        self.parking = root / "ws" / "state" / "parked-nodes"
        self.log = log
        self.reporter = reporter
        self.pip = Pip(Path(sys.executable), log=log, reporter=reporter)

    def install(
        self, specs: list[NodeSpec], locked: dict[str, str | None] | None = None
    ) -> list[InstalledNode]:
        return install_nodes(
            specs,
            self.custom_nodes,
            pip=self.pip,
            constraints={},
            parking=self.parking,
            log=self.log,
            reporter=self.reporter,
            locked_commits=locked,
        )


@pytest.fixture
def nodes(tmp_path: Path, log: InstallLog, reporter: RecordingReporter) -> Nodes:
    return Nodes(tmp_path, log, reporter)


def node_source(folder: Path, body: str = "NODE_CLASS_MAPPINGS = {}\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text(body, encoding="utf-8")
    (folder / "web").mkdir(exist_ok=True)
    (folder / "web" / "ui.js").write_text("// ui\n", encoding="utf-8")
    return folder


def path_spec(source: Path, name: str | None = None) -> NodeSpec:
    return NodeSpec(name or source.name, "path", str(source))


# --- install_nodes: path nodes ------------------------------------------------------------------


def test_path_node_is_copied_with_a_marker(tmp_path: Path, nodes: Nodes) -> None:
    source = node_source(tmp_path / "src" / "my-nodes")
    (installed,) = nodes.install([path_spec(source)])
    dest = nodes.custom_nodes / "my-nodes"
    assert (dest / "__init__.py").read_text(encoding="utf-8") == "NODE_CLASS_MAPPINGS = {}\n"
    assert (dest / "web" / "ui.js").is_file()
    assert (dest / MARKER).is_file()
    assert installed.name == "my-nodes"
    assert installed.source == str(source)
    assert installed.commit is None
    assert len(installed.sha256) == 64
    assert sorted(p.name for p in nodes.custom_nodes.iterdir()) == ["my-nodes"]
    assert not (dest / "requirements.txt").exists()


def test_rerun_does_not_recopy(tmp_path: Path, nodes: Nodes) -> None:
    source = node_source(tmp_path / "src" / "my-nodes")
    (first,) = nodes.install([path_spec(source)])
    copied = nodes.custom_nodes / "my-nodes" / "__init__.py"
    stamp = copied.stat().st_mtime_ns, copied.stat().st_ino
    (second,) = nodes.install([path_spec(source)])
    assert (copied.stat().st_mtime_ns, copied.stat().st_ino) == stamp
    assert second == first


def test_changed_source_is_copied_again(tmp_path: Path, nodes: Nodes) -> None:
    source = node_source(tmp_path / "src" / "my-nodes")
    (first,) = nodes.install([path_spec(source)])
    (source / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'X': object}\n", encoding="utf-8")
    (second,) = nodes.install([path_spec(source)])
    assert second.sha256 != first.sha256
    copied = nodes.custom_nodes / "my-nodes" / "__init__.py"
    assert "'X'" in copied.read_text(encoding="utf-8")


def test_node_dropped_from_the_list_is_removed(
    tmp_path: Path, nodes: Nodes, reporter: RecordingReporter
) -> None:
    keep = node_source(tmp_path / "src" / "keep")
    drop = node_source(tmp_path / "src" / "drop")
    nodes.install([path_spec(keep), path_spec(drop)])
    nodes.install([path_spec(keep)])
    assert sorted(p.name for p in nodes.custom_nodes.iterdir()) == ["keep"]
    assert any("'drop'" in line for line in reporter.infos)
    assert not nodes.parking.exists()
    assert reporter.warnings == []


def test_foreign_folder_is_parked_with_a_warning(
    tmp_path: Path, nodes: Nodes, reporter: RecordingReporter
) -> None:
    nodes.custom_nodes.mkdir(parents=True)
    foreign = nodes.custom_nodes / "hand-copied"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("# mine\n", encoding="utf-8")
    (nodes.custom_nodes / "stray.py").write_text("# loose file\n", encoding="utf-8")
    nodes.install([path_spec(node_source(tmp_path / "src" / "listed"))])

    assert sorted(p.name for p in nodes.custom_nodes.iterdir()) == ["listed"]
    parked_folder, parked_file = sorted(nodes.parking.iterdir())
    assert parked_folder.name.startswith("hand-copied-")
    assert parked_file.name.startswith("stray.py-")
    assert (parked_folder / "__init__.py").read_text(encoding="utf-8") == "# mine\n"
    assert len(reporter.warnings) == 2
    warning = next(w for w in reporter.warnings if "'hand-copied'" in w)
    assert str(parked_folder) in warning


def test_missing_path_node_is_named(tmp_path: Path, nodes: Nodes) -> None:
    missing = tmp_path / "src" / "gone"
    with pytest.raises(CustomNodeError, match="custom node 'gone'") as info:
        nodes.install([path_spec(missing)])
    assert str(missing) in str(info.value)


def test_empty_list_empties_custom_nodes(tmp_path: Path, nodes: Nodes) -> None:
    nodes.install([path_spec(node_source(tmp_path / "src" / "a"))])
    assert nodes.install([]) == []
    assert list(nodes.custom_nodes.iterdir()) == []


def test_list_file_to_installed_nodes(tmp_path: Path, nodes: Nodes) -> None:
    node_source(tmp_path / "conf" / "vendored" / "cool-nodes")
    path = nodes_file(tmp_path / "conf", "nodes:\n  - path: vendored/cool-nodes\n    name: cool\n")
    (installed,) = nodes.install(load_nodes_file(path))
    assert installed.name == "cool"
    assert (nodes.custom_nodes / "cool" / "__init__.py").is_file()


# --- install_nodes: git nodes -------------------------------------------------------------------


@pytest.fixture
def node_repo(tmp_path: Path) -> Path:
    repo = node_source(tmp_path / "repos" / "git-nodes")
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    git("tag", "v1.0.0", cwd=repo)
    (repo / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'Later': object}\n", "utf-8")
    git("commit", "-q", "-am", "later", cwd=repo)
    return repo


@needs_git
def test_git_node_at_a_tag_records_its_commit(
    tmp_path: Path, nodes: Nodes, node_repo: Path
) -> None:
    tagged = git("rev-parse", "v1.0.0^{commit}", cwd=node_repo)
    spec = NodeSpec("git-nodes", "git", node_repo.as_uri(), "v1.0.0")
    (installed,) = nodes.install([spec])
    dest = nodes.custom_nodes / "git-nodes"
    assert installed.commit == tagged
    assert installed.ref == "v1.0.0"
    assert git("rev-parse", "HEAD", cwd=dest) == tagged
    assert (dest / "__init__.py").read_text(encoding="utf-8") == "NODE_CLASS_MAPPINGS = {}\n"
    (again,) = nodes.install([spec])
    assert again == installed


@needs_git
def test_locked_commit_wins_over_the_ref(tmp_path: Path, nodes: Nodes, node_repo: Path) -> None:
    tagged = git("rev-parse", "v1.0.0^{commit}", cwd=node_repo)
    branch = git("rev-parse", "--abbrev-ref", "HEAD", cwd=node_repo)
    spec = NodeSpec("git-nodes", "git", node_repo.as_uri(), branch)
    (installed,) = nodes.install([spec], locked={"git-nodes": tagged})
    assert installed.commit == tagged
    assert installed.commit != git("rev-parse", "HEAD", cwd=node_repo)
    (unlocked,) = nodes.install([spec], locked={"git-nodes": None})
    assert unlocked == installed  # same source and ref: nothing refetched


@needs_git
def test_git_node_that_does_not_exist_is_named(tmp_path: Path, nodes: Nodes) -> None:
    url = (tmp_path / "no-such-repo").as_uri()
    with pytest.raises(CustomNodeError, match="custom node 'ghost'") as info:
        nodes.install([NodeSpec("ghost", "git", url, "v1")])
    assert url in str(info.value)
    assert info.value.hint is not None and "nodes list" in info.value.hint
    assert not (nodes.custom_nodes / "ghost").exists()
    assert not (nodes.custom_nodes / "ghost.partial").exists()
