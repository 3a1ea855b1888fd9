"""The shipped custom-node sets, and how they combine with the user's own list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from comfyfleet.errors import CustomNodeError
from comfyfleet.provision import COMPLETE, node_set, node_sets
from comfyfleet.provision._node_sets import merge_nodes, nodes_to_install
from comfyfleet.provision._nodes import NodeSpec

FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def test_the_shipped_sets_are_popular_video_and_complete() -> None:
    assert sorted(node_sets()) == ["complete", "popular", "video"]


@pytest.mark.parametrize("name", sorted(node_sets()))
def test_every_entry_is_an_https_git_url_pinned_to_a_full_commit(name: str) -> None:
    shipped = node_set(name)
    assert shipped.nodes, f"{name} is empty"
    assert shipped.description
    for spec in shipped.nodes:
        assert spec.kind == "git", spec
        assert spec.location.startswith("https://"), spec
        assert spec.ref is not None and FULL_COMMIT.match(spec.ref), spec
        assert spec.location.rstrip("/").rsplit("/", 1)[-1] == spec.name


def test_a_node_in_two_sets_has_the_same_pin_in_both() -> None:
    seen: dict[str, NodeSpec] = {}
    for name, shipped in node_sets().items():
        if name == COMPLETE:
            continue
        for spec in shipped.nodes:
            assert seen.setdefault(spec.name, spec) == spec, f"{spec.name} differs in {name}"


def test_complete_is_the_union_of_the_others() -> None:
    sets = node_sets()
    others = {s.name for n, shipped in sets.items() if n != COMPLETE for s in shipped.nodes}
    complete = [s.name for s in sets[COMPLETE].nodes]
    assert sorted(complete) == sorted(others)
    assert len(complete) == len(set(complete))


def test_an_unknown_set_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(CustomNodeError) as caught:
        node_set("everything")
    assert caught.value.message == "unknown node set 'everything'"
    assert caught.value.hint == "known sets: complete, popular, video"


def test_the_users_entry_wins_on_a_name_clash_in_place() -> None:
    a = NodeSpec("a", "git", "https://example.org/x/a", "1" * 40)
    b = NodeSpec("b", "git", "https://example.org/x/b", "2" * 40)
    mine = NodeSpec("b", "git", "https://example.org/fork/b", "v2")
    extra = NodeSpec("c", "path", "/opt/c")
    assert merge_nodes([[a, b], [b]], [mine, extra]) == [a, mine, extra]


def test_nodes_to_install_combines_a_set_and_a_list(tmp_path: Path) -> None:
    own = tmp_path / "nodes.yaml"
    own.write_text(
        "nodes:\n"
        "  - git: https://example.org/me/ComfyUI-KJNodes\n"
        "    ref: my-branch\n"
        "  - path: ./mine\n",
        encoding="utf-8",
    )
    specs = nodes_to_install(own, ["video"])
    names = [s.name for s in specs]
    assert names[: len(node_set("video").nodes)] == [s.name for s in node_set("video").nodes]
    assert names[-1] == "mine"
    kj = next(s for s in specs if s.name == "ComfyUI-KJNodes")
    assert (kj.location, kj.ref) == ("https://example.org/me/ComfyUI-KJNodes", "my-branch")


def test_no_sets_and_no_list_is_nothing() -> None:
    assert nodes_to_install(None, []) == []


def test_a_named_requirements_file_is_read_and_checked(tmp_path: Path) -> None:
    frame = next(s for s in node_set("video").nodes if s.name == "ComfyUI-Frame-Interpolation")
    assert frame.requirements == "requirements-no-cupy.txt"
    bad = tmp_path / "nodes.yaml"
    bad.write_text("- path: ./x\n  requirements: ../../etc/passwd\n", encoding="utf-8")
    with pytest.raises(CustomNodeError, match="must be a file inside the node"):
        nodes_to_install(bad, [])
