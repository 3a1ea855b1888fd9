"""`comfyfleet nodes` against a real ComfyUI: nodes added from local git repositories (the tests
cannot reach a git host) are pinned, installed and loaded, and a node that fails to import is
shown by `nodes check` from the instance's own log after a real start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.comfyui_env import SOURCE, TORCH, free_port_block, workspace_sharing
from tests.integration.fleet import cli, write_config
from tests.unit.gitrepo import git

pytestmark = pytest.mark.comfyui

GOOD = """class Shout:
    CATEGORY = "tests"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    def run(self, text):
        return (text.upper(),)


NODE_CLASS_MAPPINGS = {"NodesCliShout": Shout}
"""
BROKEN = "import nonexistent_dependency_for_nodes_check  # noqa: F401\nNODE_CLASS_MAPPINGS = {}\n"


def repo(folder: Path, init: str, tag: str) -> str:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(init, encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=folder)
    git("add", ".", cwd=folder)
    git("commit", "-q", "-m", "nodes", cwd=folder)
    git("tag", tag, cwd=folder)
    return git("rev-parse", "HEAD", cwd=folder)


@pytest.fixture
def ws(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workspace = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("nodes"))
    yield workspace
    if (workspace / "state" / "supervisor.sock").exists():
        cli("down", "-w", workspace, check=False)


def test_add_list_check_remove_with_a_real_instance(ws: Path, tmp_path: Path) -> None:
    good = repo(tmp_path / "repos" / "shout-nodes", GOOD, "v1")
    broken = repo(tmp_path / "repos" / "broken-nodes", BROKEN, "v2")
    added = cli("nodes", "add", "-w", ws, f"file://{tmp_path}/repos/shout-nodes@v1")
    assert f"added shout-nodes at {good}" in added.stdout
    cli("nodes", "add", "-w", ws, f"file://{tmp_path}/repos/broken-nodes", "--ref", "main")
    entries = yaml.safe_load((ws / "nodes.yaml").read_text())["nodes"]
    assert [(e["git"].rsplit("/", 1)[-1], e["ref"]) for e in entries] == [
        ("shout-nodes", good),
        ("broken-nodes", broken),
    ]
    rows = {r["name"]: r for r in json.loads(cli("nodes", "list", "-w", ws, "--json").stdout)}
    assert rows["shout-nodes"] == {
        "name": "shout-nodes",
        "source": f"file://{tmp_path}/repos/shout-nodes",
        "origin": "list",
        "pinned": good,
        "installed": good,
        "state": "installed",
    }
    assert (rows["broken-nodes"]["installed"], rows["broken-nodes"]["state"]) == (
        broken,
        "installed",
    )
    table = cli("nodes", "list", "-w", ws).stdout.splitlines()
    (line,) = [line.split() for line in table if line.startswith("shout-nodes ")]
    assert line == [
        "shout-nodes",
        rows["shout-nodes"]["source"],
        "list",
        good[:12],
        good[:12],
        "installed",
    ]

    early = cli("nodes", "check", "-w", ws, check=False)
    assert early.returncode == 1 and "reports custom-node imports yet" in early.stdout

    base = free_port_block(1)
    write_config(ws)
    cli("up", "-w", ws, "--base-port", str(base), "--detach")
    shout = httpx.get(f"http://127.0.0.1:{base}/object_info/NodesCliShout", timeout=10).json()
    assert shout["NodesCliShout"]["category"] == "tests"
    failed = cli("nodes", "check", "-w", ws, check=False)
    assert failed.returncode == 1, failed.stdout
    lines = {line.split()[1]: line for line in failed.stdout.splitlines() if line[:1] in "✓✗"}
    assert lines["broken-nodes"].startswith("✗ broken-nodes")
    assert (
        "IMPORT FAILED on instance 0: No module named 'nonexistent_dependency_for_nodes_check'"
        in lines["broken-nodes"]
    )
    assert lines["shout-nodes"].startswith("✓ shout-nodes") and "loaded" in lines["shout-nodes"]
    cli("down", "-w", ws)

    removed = cli("nodes", "remove", "-w", ws, "broken-nodes")
    assert f"removed broken-nodes from {ws / 'nodes.yaml'}" in removed.stdout
    assert not (ws / "custom_nodes" / "broken-nodes").exists()
    assert [p.name.split("-2")[0] for p in (ws / "state" / "removed-nodes").iterdir()] == [
        "broken-nodes"
    ]
    cli("up", "-w", ws, "--base-port", str(base), "--detach")
    clean = cli("nodes", "check", "-w", ws)
    assert "broken-nodes" not in clean.stdout and "✓ shout-nodes" in clean.stdout
    cli("down", "-w", ws)


def test_an_unknown_node_set_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    out = cli("install", "-w", tmp_path / "ws", "--nodes-set", "everything", check=False)
    assert out.returncode == 1
    assert "unknown node set 'everything'" in out.stderr
    assert "known sets: complete, popular, video" in out.stderr
    assert "Traceback" not in out.stderr


def test_install_with_a_node_set_and_an_own_list_that_overrides_it(
    ws: Path, tmp_path: Path
) -> None:
    """The set's nodes cannot be fetched here (no git host), so the own list replaces every one
    of them with a local repository: the install must still be the set's names, in its order,
    each from the user's source, plus the user's extra node."""
    from comfyfleet.provision import node_set

    names = [spec.name for spec in node_set("video").nodes]
    entries = []
    for name in [*names, "extra-nodes"]:
        commit = repo(tmp_path / "repos" / name, "NODE_CLASS_MAPPINGS = {}\n", "v1")
        entries.append({"git": f"file://{tmp_path}/repos/{name}", "ref": commit})
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"nodes": entries}), encoding="utf-8")
    out = cli(
        "install", "-w", ws, "--source", SOURCE, "--torch", TORCH, "--nodes", own,
        "--nodes-set", "video",
    )  # fmt: skip
    assert f"{len(names) + 1} custom nodes" in out.stdout
    locked = json.loads((ws / "comfyfleet.lock").read_text())["custom_nodes"]
    assert [n["name"] for n in locked] == [*names, "extra-nodes"]
    assert all(n["source"].startswith(f"file://{tmp_path}/repos/") for n in locked)
    assert sorted(p.name for p in (ws / "custom_nodes").iterdir()) == sorted(
        [*names, "extra-nodes"]
    )
