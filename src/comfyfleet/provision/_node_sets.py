"""Named custom-node sets shipped with comfyfleet, and the one list an install works from.

A set is a nodes list in the package (`node_sets/NAME.yaml`, the format of `_nodes`) whose every
entry is a git repository pinned to a full commit id, so `install --nodes-set popular` puts the
same trees on every machine. `complete` is not a file: it is the union of all the others, so it
can never miss a node one of them gained.

What an install works from is the chosen sets, then the user's own list on top: on a name clash
the user's entry wins (their own fork, or another pin, of a node a set carries).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from comfyfleet.errors import CustomNodeError
from comfyfleet.provision._nodes import NodeSpec, load_nodes_file, parse_nodes

COMPLETE = "complete"
"""The set made of every other shipped set."""


@dataclass(frozen=True)
class NodeSet:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]


def _folder() -> Path:
    return Path(str(resources.files("comfyfleet.provision").joinpath("node_sets")))


def _read(path: Path) -> NodeSet:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:  # a broken package, not the user's mistake
        raise CustomNodeError(f"cannot read the shipped node set {path}: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"description", "nodes"}:
        raise CustomNodeError(f"node set {path}: expected the keys 'description' and 'nodes'")
    nodes = tuple(parse_nodes({"nodes": data["nodes"]}, path))
    return NodeSet(path.stem, str(data["description"]), nodes)


def node_sets() -> dict[str, NodeSet]:
    """Every shipped set by name, `complete` included."""
    found = {path.stem: _read(path) for path in sorted(_folder().glob("*.yaml"))}
    union: dict[str, NodeSpec] = {}
    for node_set in found.values():
        for spec in node_set.nodes:
            union.setdefault(spec.name, spec)
    names = ", ".join(found)
    found[COMPLETE] = NodeSet(
        COMPLETE, f"every shipped set together ({names})", tuple(union.values())
    )
    return found


def node_set(name: str) -> NodeSet:
    """The shipped set `name`; an unknown name is an error listing the known ones."""
    known = node_sets()
    if name not in known:
        raise CustomNodeError(
            f"unknown node set '{name}'", hint=f"known sets: {', '.join(sorted(known))}"
        )
    return known[name]


def merge_nodes(sets: Iterable[Sequence[NodeSpec]], own: Sequence[NodeSpec]) -> list[NodeSpec]:
    """The sets' nodes in order (first one wins among sets), then the user's; a user entry
    replaces a set's entry of the same name in place."""
    merged: dict[str, NodeSpec] = {}
    for specs in sets:
        for spec in specs:
            merged.setdefault(spec.name, spec)
    for spec in own:
        merged[spec.name] = spec
    return list(merged.values())


def nodes_to_install(nodes_file: Path | None, set_names: Sequence[str]) -> list[NodeSpec]:
    """What an install puts into `custom_nodes/`: the named sets plus the user's list."""
    sets = [node_set(name).nodes for name in set_names]
    own = load_nodes_file(nodes_file) if nodes_file is not None else []
    return merge_nodes(sets, own)
