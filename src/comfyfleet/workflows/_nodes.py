"""Nodes as the editor holds them once a file is loaded: inputs, outputs and widget values.

A node is rebuilt from its type's definition (`Shape`), then given what the file saved for it:
each defined input takes the saved input of the same name (its link), inputs the definition
does not have are kept after them, and `widgets_values` fill the widgets that are saved, in
order. A subgraph node's widgets are the inner widgets its inputs feed ("promoted"): a copy of
the inner widget, or for a text box the very same box, since the editor's copy of a text box
shares its storage with the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.workflows._errors import ConversionError
from comfyfleet.workflows._format import Link, as_list, link_id, node_key
from comfyfleet.workflows._schema import WIDGET_TYPES, WidgetSpec
from comfyfleet.workflows._values import UNSET, is_truthy, js_string, text_box

ALWAYS, NEVER, BYPASS = 0, 2, 4
"""Node modes: runs, muted (left out with what it feeds), bypassed (inputs passed through)."""
_CORE_WIDGET_TYPES = WIDGET_TYPES - {
    "WEBCAM",
    "LOAD_3D",
    "PREVIEW_3D",
    "AUDIO_UI",
    "AUDIOUPLOAD",
    "AUDIO_RECORD",
}
_ANNOTATED = ("[input]", "[output]", "[temp]")


@dataclass
class Cell:
    """Where a widget keeps its value (shared by a text box and its promoted copies)."""

    value: Any
    changed: bool = False


@dataclass
class Widget:
    spec: WidgetSpec
    cell: Cell
    initial: str = ""
    """For `upload` widgets: the file shown before any was chosen, as text."""

    @classmethod
    def new(cls, spec: WidgetSpec) -> Widget:
        value = text_box(spec.default) if spec.kind == "text" else spec.default
        initial = js_string(spec.default) if spec.kind == "upload" else ""
        return cls(spec, Cell(value), initial)

    @property
    def name(self) -> str:
        return self.spec.name

    def set(self, value: Any) -> None:
        if self.spec.kind == "fixed":
            return
        self.cell.value = text_box(value) if self.spec.kind == "text" else value
        self.cell.changed = True

    def get(self) -> Any:
        if self.spec.kind == "fixed":
            return ""
        if self.spec.kind != "upload":
            return self.cell.value
        value = self.cell.value if self.cell.changed else self.initial
        if not is_truthy(value):
            return self.initial
        if isinstance(value, list):
            if self.spec.batch:
                return [self._path(item) for item in value]
            return self._path(value[0] if value else UNSET)
        return self._path(value)

    def _path(self, item: Any) -> str:
        """A chosen file as the server's folder lookup reads it (`name [output]` outside the
        input folder)."""
        folder = self.spec.folder
        if isinstance(item, str):
            return item + _annotation(item, folder)
        if isinstance(item, Mapping):
            name = item.get("filename")
            name = "" if name is None else js_string(name)
            sub = item.get("subfolder")
            path = f"{js_string(sub)}/{name}" if is_truthy(sub) else name
            kind = item.get("type")
            return path + (_annotation(js_string(kind), folder) if is_truthy(kind) else "")
        return ""


def _annotation(path: str, folder: str) -> str:
    lowered = path.lower()
    if any(mark in lowered for mark in _ANNOTATED) or folder == "input":
        return ""
    return f" [{folder}]"


@dataclass
class Input:
    name: str
    type: Any
    link: Any = None
    widget: str | None = None


@dataclass
class Output:
    name: Any
    type: Any
    links: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class Node:
    id: str
    type: str
    role: str
    """`node` (runs on the server), `reroute`, `primitive`, `note`, `subgraph`, `group`, or
    `missing` (a type no instance has, allowed only where it does not run)."""
    mode: int
    title: Any
    graph: Graph
    class_type: str | None = None
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    widgets: list[Widget] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    saved_values: Any = None
    subgraph: Graph | None = None
    replacements: bool = False
    group: Any = None
    """For a legacy group node: its `GroupType`."""
    inner: list[Node] = field(default_factory=list)
    """For a legacy group node: its inner nodes (ids are their index)."""

    @property
    def virtual(self) -> bool:
        return self.role not in ("node", "missing")

    def widget(self, name: Any) -> Widget | None:
        for widget in self.widgets:
            if widget.name == name:
                return widget
        return None

    def widget_for(self, slot: Input) -> Widget | None:
        """The widget an input slot stands for, if any (the editor's `getWidgetFromSlot`)."""
        return self.widget(slot.widget) if slot.widget else None

    def error(self, reason: str, hint: str | None = None) -> ConversionError:
        return ConversionError(
            reason, node_id=self.where, class_type=self.class_type or self.type, hint=hint
        )

    @property
    def where(self) -> str:
        inside = self.graph.name
        return self.id if inside is None else f"{self.id} in subgraph '{inside}'"


@dataclass(frozen=True)
class SubgraphSlot:
    name: str
    type: Any
    link_ids: tuple[Any, ...]


@dataclass(eq=False)
class Graph:
    id: str | None
    name: str | None
    nodes: dict[str, Node] = field(default_factory=dict)
    links: dict[Any, Link] = field(default_factory=dict)
    inputs: list[SubgraphSlot] = field(default_factory=list)
    outputs: list[SubgraphSlot] = field(default_factory=list)

    def input_holding(self, link: Link) -> tuple[Node, int] | None:
        """The node and input index a link arrives at (the input that holds its id)."""
        node = self.nodes.get(link.target_id)
        if node is None:
            return None
        for index, slot in enumerate(node.inputs):
            if slot.link == link.id:
                return node, index
        return None


def saved_link(saved: Mapping[str, Any] | None) -> Any:
    if saved is None:
        return None
    return link_id(saved.get("link"))


def slot_name(value: Any) -> str | None:
    """A saved slot's name (only text names can match a definition's)."""
    return value if isinstance(value, str) else None


def saved_widget_name(saved: Mapping[str, Any]) -> str | None:
    widget = saved.get("widget")
    if isinstance(widget, Mapping) and widget.get("name") is not None:
        return str(widget["name"])
    return None


def saved_slots(raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    slots = raw.get(key)
    if not isinstance(slots, list):
        return []
    return [slot if isinstance(slot, Mapping) else {} for slot in slots]


def merge_inputs(defined: list[Input], saved: list[Mapping[str, Any]]) -> list[Input]:
    """Defined inputs take their saved link by name; saved inputs the type does not define
    follow them (added by an extension, or by a version of the type that had more)."""
    by_name = {slot_name(slot.get("name")): slot for slot in saved}
    names = {slot.name for slot in defined}
    for slot in defined:
        slot.link = saved_link(by_name.get(slot.name))
    extras = [
        Input(
            js_string(slot.get("name")), slot.get("type"), saved_link(slot), saved_widget_name(slot)
        )
        for slot in saved
        if slot_name(slot.get("name")) not in names
    ]
    return defined + extras


def merge_outputs(defined: list[Output], saved: list[Mapping[str, Any]]) -> list[Output]:
    outputs = []
    for index in range(max(len(defined), len(saved))):
        held = as_list(saved[index].get("links")) if index < len(saved) else []
        links = [link for link in map(link_id, held) if link is not None]
        if index < len(defined):
            outputs.append(Output(defined[index].name, defined[index].type, links))
        else:
            outputs.append(Output(saved[index].get("name"), saved[index].get("type"), links))
    return outputs


def saved_outputs(raw: Mapping[str, Any]) -> list[Output]:
    return merge_outputs([], saved_slots(raw, "outputs"))


def saved_inputs(raw: Mapping[str, Any]) -> list[Input]:
    return merge_inputs([], saved_slots(raw, "inputs"))


def node_header(raw: Mapping[str, Any]) -> tuple[str, int]:
    mode = raw.get("mode", ALWAYS)
    return node_key(raw["id"]), mode if isinstance(mode, int) else ALWAYS


def core_widget_type(kind: Any) -> bool:
    """Whether the editor can make a widget for an input of this type by itself (what a
    PrimitiveNode needs of an input that is not a widget)."""
    return kind in _CORE_WIDGET_TYPES
