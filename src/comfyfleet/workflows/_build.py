"""Loading a UI-format file into graphs of nodes, as the editor's `loadGraphData` does.

Subgraph definitions are loaded before the nodes that use them (a subgraph node copies the
values of the inner widgets it promotes when it is loaded); a definition that contains itself
is refused. Node types are renamed first where the editor renames them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from comfyfleet.workflows._errors import ConversionError
from comfyfleet.workflows._format import (
    as_list,
    as_mapping,
    link_id,
    node_list,
    read_links,
    subgraph_definitions,
)
from comfyfleet.workflows._groups import GroupType, group_types, legacy_type
from comfyfleet.workflows._nodes import (
    Graph,
    Input,
    Node,
    Output,
    SubgraphSlot,
    Widget,
    merge_inputs,
    merge_outputs,
    node_header,
    saved_inputs,
    saved_outputs,
    saved_slots,
    saved_widget_name,
    slot_name,
)
from comfyfleet.workflows._schema import Shape, WidgetSpec, build_shape
from comfyfleet.workflows._values import js_string, js_value

RENAMED = {
    "T2IAdapterLoader": "ControlNetLoader",
    "ConditioningAverage ": "ConditioningAverage",
    "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
    "Load3DAnimation": "Load3D",
    "Preview3DAnimation": "Preview3D",
}
"""Types the editor renames when it loads a file (merged or misspelt nodes of old versions)."""
FRONTEND_ONLY = {
    "Reroute": "reroute",
    "PrimitiveNode": "primitive",
    "Note": "note",
    "MarkdownNote": "note",
}
"""Node types the editor defines itself; they never reach the server."""
_SAMPLERS = ("KSampler", "KSamplerAdvanced")
MAX_NESTING = 32
"""Subgraphs nested deeper than this are refused (the editor shows a handful at most)."""


class Builder:
    """Loads one workflow against the node definitions of `object_info`."""

    def __init__(self, workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        self.workflow = workflow
        self.object_info = object_info
        self.definitions = subgraph_definitions(workflow)
        self.subgraphs: dict[str, Graph] = {}
        self._loading: list[str] = []
        self._shapes: dict[str, Shape] = {}
        self._groups: dict[str, GroupType] | None = None
        self.missing: list[Node] = []
        """Nodes of types no instance has (they may still be muted or bypassed)."""

    def group_type(self, kind: str) -> GroupType | None:
        if self._groups is None:
            self._groups = group_types(self.workflow, self.object_info)
        return self._groups.get(kind)

    def root(self) -> Graph:
        return self.load_graph(self.workflow, None, None)

    def shape(self, class_type: str) -> Shape | None:
        if class_type not in self._shapes:
            info = self.object_info.get(class_type)
            if not isinstance(info, Mapping):
                return None
            self._shapes[class_type] = build_shape(class_type, info)
        return self._shapes[class_type]

    def subgraph(self, subgraph_id: str) -> Graph:
        if subgraph_id in self.subgraphs:
            return self.subgraphs[subgraph_id]
        if subgraph_id in self._loading:
            names = " -> ".join(self._name(s) for s in [*self._loading, subgraph_id])
            raise ConversionError(f"subgraph '{self._name(subgraph_id)}' contains itself ({names})")
        if len(self._loading) >= MAX_NESTING:
            raise ConversionError(f"subgraphs are nested more than {MAX_NESTING} deep")
        self._loading.append(subgraph_id)
        raw = self.definitions[subgraph_id]
        graph = self.load_graph(raw, subgraph_id, self._name(subgraph_id))
        graph.inputs = _io_slots(raw.get("inputs"))
        graph.outputs = _io_slots(raw.get("outputs"))
        self._loading.pop()
        self.subgraphs[subgraph_id] = graph
        return graph

    def _name(self, subgraph_id: str) -> str:
        name = self.definitions.get(subgraph_id, {}).get("name")
        return str(name) if name else subgraph_id

    def load_graph(self, raw: Mapping[str, Any], graph_id: str | None, name: str | None) -> Graph:
        where = "the workflow" if name is None else f"subgraph '{name}'"
        graph = Graph(graph_id, name, links=read_links(raw.get("links"), where))
        for saved in node_list(raw, where):
            node = self.load_node(saved, graph)
            graph.nodes[node.id] = node
        return graph

    def load_node(self, raw: Mapping[str, Any], graph: Graph) -> Node:
        node_id, mode = node_header(raw)
        kind = legacy_type(RENAMED.get(str(raw["type"]), str(raw["type"])))
        title = raw.get("title")
        properties = dict(as_mapping(raw.get("properties")))
        if kind in FRONTEND_ONLY:
            return Node(
                node_id,
                kind,
                FRONTEND_ONLY[kind],
                mode,
                title or kind,
                graph,
                inputs=saved_inputs(raw),
                outputs=saved_outputs(raw),
                properties=properties,
                saved_values=raw.get("widgets_values"),
            )
        if kind in self.definitions:
            return self._subgraph_node(raw, graph, kind)
        group = self.group_type(kind) if kind.startswith("workflow>") else None
        if group is not None:
            return self._group_node(raw, graph, group)
        shape = self.shape(kind)
        if shape is None:
            node = Node(node_id, kind, "missing", mode, title or kind, graph, class_type=kind)
            node.inputs, node.outputs = saved_inputs(raw), saved_outputs(raw)
            self.missing.append(node)
            return node
        return self._configured(raw, graph, kind, shape)

    def _configured(self, raw: Mapping[str, Any], graph: Graph, kind: str, shape: Shape) -> Node:
        node_id, mode = node_header(raw)
        title = raw.get("title")
        node = Node(
            node_id,
            kind,
            "node",
            mode,
            title if title else shape.title,
            graph,
            class_type=kind,
            properties=dict(as_mapping(raw.get("properties"))),
            replacements=shape.filename_replacements,
        )
        defined = [Input(s.name, s.type, None, s.widget) for s in shape.sockets]
        node.inputs = merge_inputs(defined, saved_slots(raw, "inputs"))
        declared = [Output(name, kind_) for name, kind_ in shape.outputs]
        node.outputs = merge_outputs(declared, saved_slots(raw, "outputs"))
        node.widgets = [Widget.new(spec) for spec in shape.widgets]
        _fill_widgets(node, _migrated(shape, raw.get("widgets_values")))
        if kind in _SAMPLERS:
            sampler = node.widget("sampler_name")
            value = sampler.get() if sampler else None
            if sampler and isinstance(value, str) and value.startswith("sample_"):
                sampler.set(value[7:])
        return node

    def _group_node(self, raw: Mapping[str, Any], graph: Graph, group: GroupType) -> Node:
        kind = str(group.info["name"])
        if kind not in self._shapes:
            self._shapes[kind] = build_shape(kind, group.info)
        node = self._configured(raw, graph, kind, self._shapes[kind])
        node.role, node.class_type, node.group = "group", None, group
        node.inner = [
            self.load_node({**inner, "id": index}, graph) for index, inner in enumerate(group.nodes)
        ]
        return node

    def _subgraph_node(self, raw: Mapping[str, Any], graph: Graph, subgraph_id: str) -> Node:
        node_id, mode = node_header(raw)
        inner = self.subgraph(subgraph_id)
        node = Node(
            node_id,
            subgraph_id,
            "subgraph",
            mode,
            raw.get("title") or inner.name,
            graph,
            properties=dict(as_mapping(raw.get("properties"))),
            subgraph=inner,
        )
        saved = saved_slots(raw, "inputs")
        defined = [Input(slot.name, slot.type) for slot in inner.inputs]
        node.inputs = merge_inputs(defined, saved)
        by_name = {slot_name(slot.get("name")): slot for slot in saved}
        for slot in node.inputs[: len(defined)]:
            if slot.name in by_name:
                slot.widget = saved_widget_name(by_name[slot.name])
        declared = [Output(slot.name, slot.type) for slot in inner.outputs]
        node.outputs = merge_outputs(declared, saved_slots(raw, "outputs"))
        _promote(node, inner)
        values = raw.get("widgets_values")
        _fill_widgets(node, values)
        _proxy_widgets(node, raw, values)
        return node


def _io_slots(raw: Any) -> list[SubgraphSlot]:
    slots = []
    for slot in raw if isinstance(raw, list) else []:
        if isinstance(slot, Mapping):
            ids = [i for i in map(link_id, as_list(slot.get("linkIds"))) if i is not None]
            slots.append(SubgraphSlot(js_string(slot.get("name")), slot.get("type"), tuple(ids)))
    return slots


def _migrated(shape: Shape, values: Any) -> Any:
    """Drop the values files from before editor 1.16 kept for inputs that are no longer widgets
    (`forceInput`), recognised as the editor does: by their count."""
    if not isinstance(values, list):
        return values
    if sum(count for _name, _force, count in shape.widget_inputs) != len(values):
        return values
    kept = []
    for index, value in enumerate(values):
        forced = index < len(shape.widget_inputs) and shape.widget_inputs[index][1]
        if not forced:
            kept.append(value)
    return kept


def _fill_widgets(node: Node, values: Any) -> None:
    """`widgets_values` into the saved widgets, in order (an object, as some custom nodes save,
    fills nothing, as in the editor)."""
    if not isinstance(values, list):
        return
    saved = [widget for widget in node.widgets if widget.spec.saved]
    for widget, value in zip(saved, values, strict=False):
        widget.set(js_value(value))


_SHARED_KINDS = ("text", "fixed", "list")


def _promote(node: Node, inner: Graph) -> None:
    """The subgraph node's widgets: for each of its inputs, the first inner widget it feeds."""
    slots = {slot.name: slot for slot in inner.inputs}
    for slot in node.inputs:
        definition = slots.get(slot.name)
        if definition is None:
            continue
        for feeding in definition.link_ids:
            link = inner.links.get(feeding)
            target = inner.nodes.get(link.target_id) if link else None
            if link is None or target is None or not 0 <= link.target_slot < len(target.inputs):
                continue
            widget = target.widget_for(target.inputs[link.target_slot])
            if widget is None:
                continue
            node.widgets.append(_promoted(widget, slot.name))
            slot.widget = slot.name
            break


def _promoted(widget: Widget, name: str) -> Widget:
    if widget.spec.kind in _SHARED_KINDS:
        spec = WidgetSpec(name, widget.spec.default, kind=widget.spec.kind)
        return Widget(spec, widget.cell)
    copy = Widget.new(WidgetSpec(name, widget.get()))
    return copy


def _proxy_widgets(node: Node, raw: Mapping[str, Any], values: Any) -> None:
    """`properties.proxyWidgets` (widgets of inner nodes shown on the subgraph node): the
    promoted widgets it names are put in its order and take their values by that order."""
    listed = (raw.get("properties") or {}).get("proxyWidgets")
    if not listed:
        return
    try:
        parsed = json.loads(listed) if isinstance(listed, str) else listed
        entries = [(str(a), str(b)) for a, b in parsed]
    except (TypeError, ValueError) as exc:
        raise node.error("its 'proxyWidgets' property is not a list of [node, widget]") from exc
    named = {name for _node, name in entries}
    kept = [w for w in node.widgets if w.name not in named]
    own = [w for node_id, name in entries if node_id == "-1" and (w := node.widget(name))]
    node.widgets = kept + own
    for index, value in enumerate(values if isinstance(values, list) else []):
        if index < len(entries) and entries[index][0] == "-1" and value is not None:
            widget = node.widget(entries[index][1])
            if widget is not None:
                widget.set(js_value(value))
