"""Legacy group nodes (`workflow>Name`, defined in `extra.groupNodes`), as the editor runs them.

The editor (since 1.2, deprecated in favour of subgraphs but still loaded) makes a node type of
each definition: the inputs of its inner nodes that nothing inside feeds become its inputs, their
widgets its widgets (renamed `Type name` where two inner nodes share a name), and the outputs
nothing inside uses its outputs. When queued, each inner node runs as `group id:index`, with the
group node's widget values written into it; an inner input is fed by the inner node linked to
it, or by whatever feeds the group node's matching input. Those origins are taken as they are:
the editor does not follow reroutes or bypassed nodes from inside a group node.

Group nodes holding a PrimitiveNode or a Reroute are refused (their remapping of widgets is not
reproduced here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.workflows._errors import ConversionError
from comfyfleet.workflows._format import as_list, as_mapping
from comfyfleet.workflows._schema import WIDGET_TYPES, definition_inputs

PREFIX = "workflow"


@dataclass
class GroupType:
    """A group node definition, turned into a node definition plus the maps the editor keeps."""

    name: str
    nodes: list[Mapping[str, Any]]
    info: dict[str, Any]
    """The node definition (in `/object_info` form) of the group node type."""
    input_map: dict[int, dict[int, int]] = field(default_factory=dict)
    """Inner node index -> inner input slot -> group node input index."""
    widget_map: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Group node widget -> (inner node index, inner widget)."""
    output_map: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Group node output -> (inner node index, inner output slot)."""
    links_to: dict[int, dict[int, list[Any]]] = field(default_factory=dict)
    """Inner node index -> inner input slot -> the inner link that feeds it."""


def group_types(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any]
) -> dict[str, GroupType]:
    """Each group node type of the file by its node type (`workflow>Name`)."""
    groups = as_mapping(as_mapping(workflow.get("extra")).get("groupNodes"))
    found: dict[str, GroupType] = {}
    for name, data in groups.items():
        if isinstance(data, Mapping):
            found[f"{PREFIX}>{name}"] = _Definition(str(name), data, object_info).build()
    return found


def legacy_type(kind: str) -> str:
    """Files from before editor 1.2.63 name group node types `workflow/Name`."""
    return f"{PREFIX}>{kind[len(PREFIX) + 1 :]}" if kind.startswith(f"{PREFIX}/") else kind


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_widget(spec: Any) -> bool:
    head = spec[0] if isinstance(spec, list | tuple) and spec else spec
    return ("COMBO" if isinstance(head, list) else head) in WIDGET_TYPES


def _options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, list | tuple) and len(spec) > 1 and isinstance(spec[1], Mapping):
        return dict(spec[1])
    return {}


class _Definition:
    def __init__(self, name: str, data: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        self.name = name
        self.data = data
        self.object_info = object_info
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise ConversionError(f"group node '{name}': its definition has no 'nodes' list")
        self.nodes: list[Mapping[str, Any]] = [n if isinstance(n, Mapping) else {} for n in nodes]
        self.group = GroupType(name, self.nodes, {})
        self.required: dict[str, Any] = {}
        self.outputs: list[Any] = []
        self.output_names: list[str] = []
        self.seen_inputs: dict[str, int] = {}
        self.seen_outputs: set[str] = set()
        self.input_count = 0
        self.old_to_new_widgets: dict[int, dict[str, str | None]] = {}
        self.links_from: dict[int, dict[int, list[list[Any]]]] = {}
        self.external: dict[int, dict[int, Any]] = {}
        self._read_links()

    def _read_links(self) -> None:
        """Links are `[from index, slot, to index, slot, ...]`; those from outside the group
        (no index) and malformed ones join nothing."""
        for link in as_list(self.data.get("links")):
            if not isinstance(link, list) or len(link) < 4 or not all(map(_index, link[:4])):
                continue
            source, slot, target, target_slot = link[:4]
            self.links_from.setdefault(source, {}).setdefault(slot, []).append(link)
            self.group.links_to.setdefault(target, {})[target_slot] = link
        for entry in as_list(self.data.get("external")):
            if (
                isinstance(entry, list)
                and len(entry) >= 3
                and _index(entry[0])
                and _index(entry[1])
            ):
                self.external.setdefault(entry[0], {})[entry[1]] = entry[2]

    def build(self) -> GroupType:
        converted_later = []
        for index, node in enumerate(self.nodes):
            kind = node.get("type")
            if kind in ("PrimitiveNode", "Reroute"):
                raise ConversionError(
                    f"group node '{self.name}' holds a {kind}, which is not supported here",
                    hint="in the editor, convert the group node to a subgraph and save again",
                )
            info = self.object_info.get(str(kind))
            if not isinstance(info, Mapping):
                raise ConversionError(
                    f"group node '{self.name}' holds a node of type '{kind}', which no instance "
                    "of this fleet has",
                    hint="install the custom node that provides it on the instances",
                )
            inputs = {name: spec for name, (spec, _) in definition_inputs(str(kind), info).items()}
            if inputs:
                converted_later.append(self._inputs(index, node, inputs))
            if info.get("output"):
                self._outputs(index, node, info)
        for job in converted_later:
            self._converted(*job)
        self.group.info = {
            "name": f"{PREFIX}>{self.name}",
            "display_name": self.name,
            "input": {"required": self.required},
            "output": self.outputs,
            "output_name": self.output_names,
        }
        return self.group

    def _input_config(
        self, index: int, node: Mapping[str, Any], input_name: str, spec: Any, extra: dict[str, Any]
    ) -> tuple[str, Any]:
        saved = [i for i in node.get("inputs") or [] if isinstance(i, Mapping)]
        custom = ((self.data.get("config") or {}).get(str(index)) or {}).get("input") or {}
        label = next((i.get("label") for i in saved if i.get("name") == input_name), None)
        name = (custom.get(input_name) or {}).get("name") or label or input_name
        key = name
        prefix = ""
        if name in self.seen_inputs:
            prefix = f"{node.get('title') or node.get('type')} "
            key = name = f"{prefix}{input_name}"
            if name in self.seen_inputs:
                name = f"{prefix}{self.seen_inputs[name]} {input_name}"
        self.seen_inputs[key] = self.seen_inputs.get(key, 1) + 1
        if input_name in ("seed", "noise_seed"):
            extra = {**extra, "control_after_generate": f"{prefix}control_after_generate"}
        head = spec[0] if isinstance(spec, list | tuple) and spec else spec
        if head == "IMAGEUPLOAD":
            target = self.old_to_new_widgets.get(index, {}).get(
                _options(spec).get("widget") or "image"
            )
            extra = {**extra, "widget": target or "image"}
        if extra:
            spec = [head, {**_options(spec), **extra}]
        return name, spec

    def _inputs(
        self, index: int, node: Mapping[str, Any], inputs: dict[str, Any]
    ) -> tuple[int, Mapping[str, Any], dict[str, Any], list[str], dict[int, str]]:
        slots: list[str] = []
        converted: dict[int, str] = {}
        widget_names = self.old_to_new_widgets.setdefault(index, {})
        saved = [i if isinstance(i, Mapping) else {} for i in node.get("inputs") or []]
        for input_name, spec in inputs.items():
            if not _is_widget(spec):
                slots.append(input_name)
                continue
            at = next(
                (
                    k
                    for k, i in enumerate(saved)
                    if i.get("name") == input_name
                    and isinstance(i.get("widget"), Mapping)
                    and i["widget"].get("name") == input_name
                ),
                -1,
            )
            if at > -1:
                converted[at] = input_name
                widget_names[input_name] = None
                continue
            name, config = self._input_config(index, node, input_name, spec, {})
            self.required[name] = config
            widget_names[input_name] = name
            self.group.widget_map[name] = (index, input_name)
        links_to = self.group.links_to.get(index, {})
        mapping = self.group.input_map.setdefault(index, {})
        custom = ((self.data.get("config") or {}).get(str(index)) or {}).get("input") or {}
        for slot, input_name in enumerate(slots):
            if slot in links_to:
                continue
            name, config = self._input_config(index, node, input_name, inputs[input_name], {})
            if (custom.get(input_name) or {}).get("visible") is False:
                continue
            self.required[name] = config
            mapping[slot] = self.input_count
            self.input_count += 1
        return index, node, inputs, slots, converted

    def _converted(
        self,
        index: int,
        node: Mapping[str, Any],
        inputs: dict[str, Any],
        slots: list[str],
        converted: dict[int, str],
    ) -> None:
        """Widget inputs (every widget has a socket since editor 1.16), after all other inputs,
        in the editor's order: by socket index, sorted as text."""
        links_to = self.group.links_to.get(index, {})
        mapping = self.group.input_map.setdefault(index, {})
        ordered = [converted[k] for k in sorted(converted, key=str)]
        for offset, input_name in enumerate(ordered):
            slot = len(slots) + offset
            if slot in links_to:
                continue
            name, config = self._input_config(
                index, node, input_name, inputs[input_name], {"defaultInput": True}
            )
            self.required[name] = config
            self.group.widget_map[name] = (index, input_name)
            self.old_to_new_widgets.setdefault(index, {})[input_name] = name
            mapping[slot] = self.input_count
            self.input_count += 1

    def _outputs(self, index: int, node: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        types = info.get("output") or []
        names = info.get("output_name") or []
        custom = ((self.data.get("config") or {}).get(str(index)) or {}).get("output") or {}
        saved = [o if isinstance(o, Mapping) else {} for o in node.get("outputs") or []]
        for slot, kind in enumerate(types):
            linked = slot in self.links_from.get(index, {}) and slot not in self.external.get(
                index, {}
            )
            config = custom.get(str(slot)) or {}
            visible = config.get("visible", not linked)
            if not visible:
                continue
            self.group.output_map[len(self.outputs)] = (index, slot)
            self.outputs.append(kind)
            label = config.get("name")
            if not label:
                label = names[slot] if slot < len(names) and names[slot] else kind
                shown = next((o for o in saved if o.get("name") == label), None)
                if shown and shown.get("label"):
                    label = shown["label"]
            name = str(label)
            if name in self.seen_outputs:
                prefix = f"{node.get('title') or node.get('type')} "
                name = f"{prefix}{label}"
                if name in self.seen_outputs:
                    name = f"{prefix}{index} {label}"
            self.seen_outputs.add(name)
            self.output_names.append(name)
