"""UI format to API format: the graph the editor's Run button would queue for a saved file.

The steps follow the editor's own (`graphToPrompt`): load the file (`_build`), let each
PrimitiveNode write its value into the widgets it feeds, then for every node that runs on the
server (not muted, not bypassed, not one of the editor's own) take its sent widget values and
replace those of linked inputs by the link's real origin (`_resolve`). Inputs whose origin is a
node that does not run are left out.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from comfyfleet.workflows._build import Builder
from comfyfleet.workflows._errors import ConversionError
from comfyfleet.workflows._format import is_ui_workflow
from comfyfleet.workflows._nodes import BYPASS, NEVER, Graph, Node, Widget, core_widget_type
from comfyfleet.workflows._resolve import Flat
from comfyfleet.workflows._values import (
    UNSET,
    dynamic_prompt,
    is_truthy,
    random_choice,
    text_box,
    text_replacements,
)

_REPLACE_PROPERTY = "Run widget replace on values"
_NAME_PROPERTY = "Node name for S&R"


def convert_workflow(
    workflow: Mapping[str, Any],
    object_info: Mapping[str, Any],
    *,
    rng: random.Random | None = None,
    now: dt.datetime | None = None,
    max_nodes: int | None = None,
) -> dict[str, Any]:
    """The API-format graph for a UI-format `workflow`, read with the node definitions of
    `object_info` (a ComfyUI `/object_info` answer, or a fleet's merged one).

    `rng` draws the `{a|b}` choices of dynamic prompts (a new draw each call, as each press of
    Run in the editor); `now` fills `%date:…%` in file name prefixes (default: local time now);
    `max_nodes` bounds the opened-up graph (`TooManyNodes` past it).
    Raises `ConversionError` naming the node and the reason: a node that would run has a type
    no instance has, its value is made by the editor's browser (a webcam), or the editor could
    not queue the file either (a link loop, a subgraph that contains itself)."""
    if not is_ui_workflow(workflow):
        raise ConversionError("not a UI-format workflow (it needs 'nodes' and 'links')")
    builder = Builder(workflow, object_info)
    root = builder.root()
    flat = Flat(root, max_nodes)
    sender = _Sender(root, random_choice(rng or random.Random()), now or dt.datetime.now())
    for graph in [root, *builder.subgraphs.values()]:
        for node in graph.nodes.values():
            if node.role == "primitive":
                _apply_primitive(node, sender)
    for node in root.nodes.values():
        if node.role == "group":
            _fill_group(node)
    return _emit(flat, sender)


def _emit(flat: Flat, sender: _Sender) -> dict[str, Any]:
    output: dict[str, Any] = {}
    for entry in flat.nodes.values():
        node = entry.node
        if node.virtual or node.mode in (NEVER, BYPASS):
            continue
        if node.role == "missing":
            raise node.error(
                "no instance of this fleet has this node type",
                hint="install the custom node that provides it on the instances, or mute the node",
            )
        inputs: dict[str, Any] = {}
        for widget in node.widgets:
            if widget.name and widget.spec.sent:
                inputs[widget.name] = _wrap(sender.value(node, widget))
        for index, held in enumerate(node.inputs):
            origin = flat.resolve_input(entry, index)
            if origin is None:
                continue
            if origin.is_value:
                inputs[held.name] = _wrap(origin.value)
            else:
                inputs[held.name] = [origin.node_id, origin.slot]
        output[entry.id] = {
            "inputs": inputs,
            "class_type": node.class_type,
            "_meta": {"title": node.title},
        }
    for node_graph in output.values():
        inputs = node_graph["inputs"]
        for name, value in list(inputs.items()):
            unlinked = isinstance(value, list) and len(value) == 2 and value[0] not in output
            if unlinked or value is UNSET:
                del inputs[name]
    return output


def _wrap(value: Any) -> Any:
    """Lists are links in the API format: a list value travels boxed (the server unboxes it)."""
    return {"__value__": value} if isinstance(value, list) else value


class _Sender:
    """Widget values as sent: prompts expanded, file name prefixes filled in."""

    def __init__(self, root: Graph, choose: Callable[[int], int], now: dt.datetime) -> None:
        self.root = root
        self.choose = choose
        self.now = now

    def value(self, node: Node, widget: Widget) -> Any:
        spec = widget.spec
        if spec.kind == "editor":
            raise node.error(
                f"widget '{widget.name}': {spec.reason}",
                hint="a saved workflow cannot supply it; use a loader node with a file instead",
            )
        value = widget.get()
        if node.replacements and widget.name == "filename_prefix":
            if not isinstance(value, str):
                raise node.error("widget 'filename_prefix' must be text")
            return self.replaced(value)
        if spec.dynamic_prompts and isinstance(value, str):
            return dynamic_prompt(value, self.choose)
        return value

    def replaced(self, value: str) -> str:
        return text_replacements(value, self._lookup, self.now)

    def _lookup(self, node_name: str, widget_name: str) -> tuple[Any] | None:
        nodes = list(_all_nodes(self.root))
        matched = [n for n in nodes if _search_name(n) == node_name]
        if not matched:
            matched = [n for n in nodes if n.title == node_name]
        if not matched:
            return None
        widget = matched[0].widget(widget_name)
        return None if widget is None else (widget.get(),)


def _search_name(node: Node) -> Any:
    """The name `%Name.widget%` finds a node by: its 'Node name for S&R' property, which the
    editor gives every server node (save nodes aside) its type for."""
    if _NAME_PROPERTY in node.properties:
        return node.properties[_NAME_PROPERTY]
    if node.role == "node" and not node.replacements:
        return node.type
    return None


def _all_nodes(graph: Graph) -> Iterator[Node]:
    """Every node, depth first, a subgraph's nodes before the subgraph node (as the editor)."""
    for node in graph.nodes.values():
        if node.role == "subgraph" and node.subgraph is not None:
            yield from _all_nodes(node.subgraph)
        yield node


def _fill_group(node: Node) -> None:
    """A group node's widget values into its inner nodes' widgets."""
    for name, (index, inner_name) in node.group.widget_map.items():
        outer = node.widget(name)
        inner = node.inner[index].widget(inner_name) if index < len(node.inner) else None
        if outer is not None and inner is not None:
            inner.set(outer.get())


def _apply_primitive(node: Node, sender: _Sender) -> None:
    """A PrimitiveNode's value into every widget its output feeds. Its widget only exists once
    its first link reaches an input that can be a widget; otherwise it sends nothing."""
    links = node.outputs[0].links if node.outputs else []
    if not links:
        return
    graph = node.graph
    shaped = _primitive_widget(graph, links[0])
    value: Any = UNSET
    if shaped is not None:
        saved = node.saved_values
        if isinstance(saved, list) and saved:
            value = saved[0]
        else:
            value = shaped.get() if isinstance(shaped, Widget) else UNSET
        if isinstance(shaped, Widget) and shaped.spec.kind == "text":
            value = text_box(value)
    if is_truthy(value) and node.properties.get(_REPLACE_PROPERTY):
        if not isinstance(value, str):
            raise node.error("its value must be text to run widget replacements on it")
        value = sender.replaced(value)
    for link_id in links:
        link = graph.links.get(link_id)
        held = graph.input_holding(link) if link is not None else None
        if held is None:
            continue
        target, index = held
        widget = target.widget_for(target.inputs[index])
        if widget is not None:
            widget.set(value)


def _primitive_widget(graph: Graph, link_id: Any) -> Widget | bool | None:
    """What a PrimitiveNode's widget copies: the target's widget (or True for a target input
    of a widget type that has none); None when the primitive gets no widget."""
    link = graph.links.get(link_id)
    held = graph.input_holding(link) if link is not None else None
    if held is None:
        return None
    target, index = held
    slot = target.inputs[index]
    if slot.widget:
        return target.widget(slot.widget) or True
    return True if core_widget_type(slot.type) else None
