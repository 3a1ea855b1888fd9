"""Following links to the node that really produces a value, as the editor does when it queues.

Every node gets an execution id: its own id at the top level, `5:12` for node 12 inside the
subgraph node 5 (deeper subgraphs add more parts). An input's link is followed through what does
not run on the server: a reroute passes on its input; a bypassed node passes on the input of the
same type as the wanted one (the same slot first, then an input of exactly that type, then the
first that can connect); a subgraph node leads inside to the node behind its output, and a node
inside leads out through the subgraph's input to what feeds the subgraph node, or to the value of
its promoted widget when nothing does. A link that ends nowhere leaves the input unset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfyfleet.workflows._errors import TooManyNodes
from comfyfleet.workflows._format import SUBGRAPH_INPUT_ID, Link
from comfyfleet.workflows._nodes import BYPASS, Graph, Node


@dataclass(frozen=True)
class Origin:
    """Where an input's value comes from: an output of a node that runs, or a widget value."""

    node_id: str
    slot: int
    value: Any = None
    is_value: bool = False


@dataclass(eq=False)
class Executable:
    """A node at one place in the flattened graph (the editor's `ExecutableNodeDTO`)."""

    node: Node
    path: tuple[str, ...]
    container: Node | None
    """The subgraph node whose subgraph holds this node (None at the top level)."""
    group: Node | None = None
    """The legacy group node this node is inside of, if any."""

    @property
    def id(self) -> str:
        return ":".join((*self.path, self.node.id))


@dataclass(frozen=True)
class _Step:
    """The next place to look: an input (`inward`) or an output of a node."""

    inward: bool
    at: Executable
    slot: int
    wanted: Any


def _is_any(kind: Any) -> bool:
    return kind in ("", "*") or not kind


def connects(a: Any, b: Any) -> bool:
    """Whether slot types a and b may be linked (the editor's `isValidConnection`)."""
    if _is_any(a) or _is_any(b) or a == b:
        return True
    left, right = str(a).lower(), str(b).lower()
    if "," not in left and "," not in right:
        return left == right
    return any(connects(x, y) for x in left.split(",") for y in right.split(","))


class Flat:
    """Every node of the workflow by execution id, subgraphs opened."""

    def __init__(self, root: Graph, max_nodes: int | None = None) -> None:
        self.root = root
        self.max_nodes = max_nodes
        self.nodes: dict[str, Executable] = {}
        for node in root.nodes.values():
            self._add(node, (), None, [])

    def _add(
        self, node: Node, path: tuple[str, ...], container: Node | None, seen: list[Graph]
    ) -> None:
        entry = Executable(node, path, container)
        self._keep(entry)
        if node.role == "group":
            if path:
                raise node.error(
                    "a group node inside a subgraph cannot be queued",
                    hint="in the editor, convert the group node to a subgraph",
                )
            for child in node.inner:
                self._keep(Executable(child, (node.id,), None, group=node))
            return
        inner = node.subgraph
        if node.role != "subgraph" or inner is None:
            return
        if inner in seen:
            raise node.error("its subgraph contains itself")
        for child in inner.nodes.values():
            self._add(child, (*path, node.id), node, [*seen, inner])

    def _keep(self, entry: Executable) -> None:
        self.nodes.setdefault(entry.id, entry)
        if self.max_nodes is not None and len(self.nodes) > self.max_nodes:
            raise TooManyNodes(len(self.nodes), self.max_nodes)

    def resolve_input(self, at: Executable, slot: int) -> Origin | None:
        """Where input `slot` of `at` gets its value from (None: nowhere, leave it unset).

        Followed step by step in a loop, not by recursion: a file may chain any number of
        reroutes and bypassed nodes."""
        visited: set[str] = set()
        step: Origin | _Step | None = _Step(True, at, slot, None)
        while isinstance(step, _Step):
            key = f"{step.at.id}[{'I' if step.inward else 'O'}]{step.slot}"
            if key in visited:
                raise step.at.node.error(f"slot {step.slot} links back to itself (a loop of links)")
            visited.add(key)
            if step.inward:
                step = self._input(step.at, step.slot, step.wanted)
            else:
                step = self._output(step.at, step.slot, step.wanted)
        return step

    def _input(self, at: Executable, slot: int, wanted: Any) -> Origin | _Step | None:
        if at.group is not None:
            return self._group_input(at, at.group, slot)
        if not 0 <= slot < len(at.node.inputs):
            raise at.node.error(f"a link arrives at input {slot}, which it does not have")
        held = at.node.inputs[slot]
        if held.link is None:
            return None
        link = at.node.graph.links.get(held.link)
        if link is None:
            return None
        if at.container is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            return self._from_outside(at, link)
        origin = self.nodes.get(":".join((*at.path, link.origin_id)))
        if origin is None:
            return None
        return _Step(False, origin, link.origin_slot, held.type if wanted is None else wanted)

    def _from_outside(self, at: Executable, link: Link) -> Origin | _Step | None:
        outer = at.container
        assert outer is not None
        if not 0 <= link.origin_slot < len(outer.inputs):
            raise outer.error(
                f"its subgraph reads input {link.origin_slot}, which it does not have"
            )
        slot = outer.inputs[link.origin_slot]
        if slot.link is None:
            widget = outer.widget_for(slot)
            if widget is None:
                return None
            return Origin(at.id, -1, widget.get(), is_value=True)
        if outer.graph.links.get(slot.link) is None:
            return None
        return _Step(True, self.nodes[":".join(at.path)], link.origin_slot, None)

    def _output(self, at: Executable, slot: int, wanted: Any) -> Origin | _Step | None:
        node = at.node
        if node.role == "group":
            return self._group_output(at, slot, wanted)
        if node.mode == BYPASS:
            index = self._bypass_slot(at, slot, wanted)
            return None if index < 0 else _Step(True, at, index, None)
        if node.role == "subgraph":
            return self._from_inside(at, slot, wanted)
        if node.virtual:
            # A reroute (or any node the server never sees) passes on what feeds the input of
            # the same index, still looking for the type the final input wants.
            if slot < len(node.inputs) and node.inputs[slot].link is not None:
                return _Step(True, at, slot, wanted)
            return None
        return Origin(at.id, slot)

    def _group_input(self, at: Executable, group: Node, slot: int) -> Origin | None:
        """An inner node's input: the inner node linked to it, or what feeds the group node's
        input for it, taken as it is (a group node does not look through what it finds)."""
        kind = group.group
        index = int(at.node.id)
        outer = kind.input_map.get(index, {}).get(slot)
        if outer is not None:
            held = group.inputs[outer] if outer < len(group.inputs) else None
            link = group.graph.links.get(held.link) if held and held.link is not None else None
            if link is None or link.origin_id not in group.graph.nodes:
                return None
            if link.origin_id not in self.nodes:
                raise at.node.error(f"input {slot} is fed by node {link.origin_id}, not found")
            return Origin(link.origin_id, link.origin_slot)
        inner = kind.links_to.get(index, {}).get(slot)
        if inner is None:
            return None
        source = kind.nodes[inner[0]] if 0 <= inner[0] < len(kind.nodes) else {}
        if source.get("type") == "PrimitiveNode":
            return None
        return Origin(f"{group.id}:{inner[0]}", int(inner[1]))

    def _group_output(self, at: Executable, slot: int, wanted: Any) -> Origin | _Step | None:
        node = at.node
        if node.mode == BYPASS:
            order = [slot, *range(len(node.inputs))]
            match = next(
                (i for i in order if 0 <= i < len(node.inputs) and node.inputs[i].type == wanted),
                None,
            )
            return None if match is None else _Step(True, at, match, None)
        links = node.outputs[slot].links if 0 <= slot < len(node.outputs) else []
        link = node.graph.links.get(links[0]) if links else None
        inner = node.group.output_map.get(link.origin_slot) if link is not None else None
        if inner is None:
            raise node.error(f"output {slot} of the group node leads to no inner node")
        return Origin(f"{at.id}:{inner[0]}", inner[1])

    def _bypass_slot(self, at: Executable, slot: int, wanted: Any) -> int:
        inputs = at.node.inputs
        if not 0 <= slot < len(at.node.outputs):
            raise at.node.error(f"a link leaves output {slot}, which it does not have")
        produced = at.node.outputs[slot].type
        if wanted in ("*", ""):
            return slot if len(inputs) > slot else 0
        if slot < len(inputs):
            opposite = inputs[slot].type
            if connects(opposite, produced) and connects(opposite, wanted):
                return slot
        for index, held in enumerate(inputs):
            if held.type == wanted:
                return index
        for index, held in enumerate(inputs):
            if connects(held.type, produced) and connects(held.type, wanted):
                return index
        return -1

    def _from_inside(self, at: Executable, slot: int, wanted: Any) -> Origin | _Step | None:
        node = at.node
        inner = node.subgraph
        assert inner is not None
        if not 0 <= slot < len(node.outputs) or slot >= len(inner.outputs):
            raise node.error(f"a link leaves output {slot}, which its subgraph does not have")
        links = [inner.links[i] for i in inner.outputs[slot].link_ids if i in inner.links]
        if not links:
            return None
        link = links[0]
        if link.origin_id == SUBGRAPH_INPUT_ID or link.origin_id not in inner.nodes:
            raise node.error(
                f"output {slot} of its subgraph is not produced by a node inside it",
                hint="the editor cannot queue a subgraph that passes an input straight out",
            )
        target = self.nodes[":".join((*at.path, node.id, link.origin_id))]
        return _Step(False, target, link.origin_slot, wanted)
