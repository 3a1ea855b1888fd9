"""Reading the editor's file format: its two link notations and its subgraph definitions.

A saved workflow (schema 0.4) lists links as arrays `[id, origin_id, origin_slot, target_id,
target_slot, type]`; schema 1 and every subgraph definition list them as objects with those
names. Node ids are compared as text, as the editor's node lookup does; link ids as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.workflows._errors import ConversionError

SUBGRAPH_INPUT_ID = "-10"
"""The origin of a link that enters a subgraph through one of its inputs."""
SUBGRAPH_OUTPUT_ID = "-20"
"""The target of a link that leaves a subgraph through one of its outputs."""
_LINK_FIELDS = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")


def is_ui_workflow(workflow: Any) -> bool:
    """Whether `workflow` is in the editor's format (`nodes` and `links`), not the API format."""
    return (
        isinstance(workflow, Mapping)
        and isinstance(workflow.get("nodes"), list)
        and "links" in workflow
    )


def ui_node_count(workflow: Any) -> int | None:
    """How many nodes a UI-format workflow lists (its subgraph and group node definitions'
    included), or None for a workflow that is not in the UI format."""
    if not is_ui_workflow(workflow):
        return None
    count = len(workflow["nodes"])
    for subgraph in subgraph_definitions(workflow).values():
        nodes = subgraph.get("nodes")
        count += len(nodes) if isinstance(nodes, list) else 0
    for group in as_mapping(as_mapping(workflow.get("extra")).get("groupNodes")).values():
        count += len(as_list(as_mapping(group).get("nodes")))
    return count


@dataclass(frozen=True)
class Link:
    id: Any
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def link_id(value: Any) -> int | str | None:
    """A link id as a file may hold it (a number, sometimes text); anything else links nowhere."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def node_key(value: Any) -> str:
    """A node id as the editor's lookups see it (ids are object keys there: text)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_links(raw: Any, where: str) -> dict[Any, Link]:
    """The links of a graph by id, from either notation; malformed entries are an error."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConversionError(f"{where}: 'links' must be a list")
    links: dict[Any, Link] = {}
    for entry in raw:
        if entry is None:
            continue
        if isinstance(entry, list) and len(entry) >= 5:
            fields = dict(zip(_LINK_FIELDS, entry, strict=False))
        elif isinstance(entry, Mapping):
            fields = dict(entry)
        else:
            raise ConversionError(f"{where}: a link must be an array or an object, not {entry!r}")
        try:
            identity = link_id(fields["id"])
            if identity is None:
                raise TypeError("a link id must be a number or text")
            link = Link(
                id=identity,
                origin_id=node_key(fields["origin_id"]),
                origin_slot=int(fields["origin_slot"]),
                target_id=node_key(fields["target_id"]),
                target_slot=int(fields["target_slot"]),
                type=fields.get("type"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"{where}: malformed link {entry!r}") from exc
        links[link.id] = link
    return links


def subgraph_definitions(workflow: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every subgraph definition in the file by id: the top level's and those nested in one."""
    found: dict[str, Mapping[str, Any]] = {}
    pending = [workflow]
    while pending:
        holder = pending.pop()
        for subgraph in as_list(as_mapping(holder.get("definitions")).get("subgraphs")):
            if isinstance(subgraph, Mapping) and isinstance(subgraph.get("id"), str):
                if subgraph["id"] not in found:
                    found[subgraph["id"]] = subgraph
                    pending.append(subgraph)
    return found


def node_list(holder: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    nodes = holder.get("nodes")
    if not isinstance(nodes, list):
        raise ConversionError(f"{where}: 'nodes' must be a list")
    for node in nodes:
        if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
            raise ConversionError(f"{where}: every node needs an 'id' and a 'type'")
    return nodes
