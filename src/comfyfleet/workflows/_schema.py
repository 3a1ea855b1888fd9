"""What a node of a given type looks like in the editor, from its `/object_info` definition: its
input sockets, its widgets (in the order a saved node's `widgets_values` follows) and outputs.

The editor builds a node from its definition after its extensions have added to it (an `upload`
button to media loaders, an `image` view to 3D previews, an audio player to audio nodes), then
creates one socket per input that is not a widget, then one widget per widget input, each with a
socket of its own. A widget may bring more: a seed's `control_after_generate` and a combo's
filter list, which are saved in `widgets_values` but never sent to the server. Each widget here
carries the two flags that decide where its value goes: `saved` (it takes a `widgets_values`
slot) and `sent` (it is an input of the API graph).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.workflows._values import UNSET

SEED_NAMES = ("seed", "noise_seed")
"""Integer inputs that get a control widget even when their definition does not ask for one."""
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
_MEDIA_UPLOAD = ("image_upload", "video_upload", "animated_image_upload")
_AUDIO_NODES = ("LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus")
_SAVE_NODES = frozenset(
    {
        "SaveImage",
        "SaveVideo",
        "SaveAnimatedWEBP",
        "SaveWEBM",
        "SaveAudio",
        "SaveGLB",
        "SaveAnimatedPNG",
        "CLIPSave",
        "VAESave",
        "ModelSave",
        "LoraSave",
        "SaveLatent",
    }
)
"""Nodes whose `filename_prefix` takes `%date:…%` and `%Node.widget%` replacements when sent."""
WIDGET_TYPES = frozenset(
    {
        "INT",
        "FLOAT",
        "BOOLEAN",
        "STRING",
        "MARKDOWN",
        "COMBO",
        "IMAGEUPLOAD",
        "COLOR",
        "IMAGECOMPARE",
        "CHART",
        "GALLERIA",
        "TEXTAREA",
        "WEBCAM",
        "LOAD_3D",
        "PREVIEW_3D",
        "AUDIO_UI",
        "AUDIOUPLOAD",
        "AUDIO_RECORD",
    }
)
"""Input types the editor shows as widgets (its own and those its bundled extensions add)."""


@dataclass(frozen=True)
class WidgetSpec:
    name: str
    default: Any = UNSET
    saved: bool = True
    """Takes a slot of `widgets_values`."""
    sent: bool = True
    """Is an input of the API graph."""
    kind: str = "value"
    """How its value behaves: `value` (kept as set), `text` (a text box: stored as text),
    `fixed` (shows something, holds ''), `upload` (a media file name, see `folder`),
    `list` (a multi-select), `editor` (made in the editor's browser at queue time)."""
    dynamic_prompts: bool = False
    folder: str = "input"
    batch: bool = False
    reason: str = ""
    """For `editor` widgets: why a saved file cannot supply the value."""


@dataclass(frozen=True)
class Socket:
    name: str
    type: Any
    widget: str | None = None


@dataclass(frozen=True)
class Shape:
    """A node type as the editor builds it."""

    class_type: str
    title: str
    sockets: tuple[Socket, ...]
    widgets: tuple[WidgetSpec, ...]
    outputs: tuple[tuple[str, Any], ...]
    widget_inputs: tuple[tuple[str, bool, int], ...] = field(default=())
    """(name, forceInput, widgets it counts for) for each widget-capable input in definition
    order: what the editor reads to drop values that files from before version 1.16 stored for
    inputs that are no longer widgets."""
    filename_replacements: bool = False


def _options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, list | tuple) and len(spec) > 1 and isinstance(spec[1], Mapping):
        return dict(spec[1])
    return {}


def _type(spec: Any) -> Any:
    head = spec[0] if isinstance(spec, list | tuple) and spec else spec
    return "COMBO" if isinstance(head, list) else head


def _combo_options(spec: Any) -> list[Any]:
    head = spec[0] if isinstance(spec, list | tuple) and spec else None
    if isinstance(head, list):
        return head
    options = _options(spec).get("options")
    return options if isinstance(options, list) else []


def definition_inputs(class_type: str, info: Mapping[str, Any]) -> dict[str, tuple[Any, bool]]:
    """The definition's inputs by name, as (spec, optional), after the editor's extensions added
    theirs (at the end of `required`, in the order the editor registers its extensions)."""
    section = info.get("input") if isinstance(info.get("input"), Mapping) else {}
    order = info.get("input_order") if isinstance(info.get("input_order"), Mapping) else {}
    required = _in_order(section.get("required"), order.get("required"))  # type: ignore[union-attr]
    optional = _in_order(section.get("optional"), order.get("optional"))  # type: ignore[union-attr]
    if class_type in ("Preview3D", "SaveGLB"):
        required["image"] = ["PREVIEW_3D"]
    if class_type in _AUDIO_NODES:
        required["audioUI"] = ["AUDIO_UI", {}]
    if _options(required.get("audio")).get("audio_upload") is True:
        required["upload"] = ["AUDIOUPLOAD", {}]
    for name, spec in list(required.items()):
        options = _options(spec)
        is_combo = isinstance(spec, list | tuple) and spec and isinstance(spec[0], list)
        if any(options.get(flag) is True for flag in _MEDIA_UPLOAD) and (
            is_combo or _type(spec) == "COMBO"
        ):
            required["upload"] = ["IMAGEUPLOAD", {**options, "imageInputName": name}]
            break
    merged: dict[str, tuple[Any, bool]] = {name: (spec, False) for name, spec in required.items()}
    for name, spec in optional.items():
        merged[name] = (spec, True)
    return merged


def _in_order(specs: Any, order: Any) -> dict[str, Any]:
    """A section of inputs in the server's order: `input_order` lists it, whatever order a store
    kept the keys in."""
    specs = dict(specs) if isinstance(specs, Mapping) else {}
    names = [n for n in order if n in specs] if isinstance(order, list) else []
    return {name: specs[name] for name in [*names, *(n for n in specs if n not in names)]}


def _ordered(inputs: dict[str, tuple[Any, bool]], order: Any) -> list[str]:
    if not isinstance(order, Mapping):
        return list(inputs)
    names: list[str] = []
    for section, optional in (("required", False), ("optional", True)):
        for name in order.get(section) or []:
            if name in inputs and inputs[name][1] is optional and name not in names:
                names.append(name)
    names += [name for name in inputs if name not in names]
    return names


def _widget_type(spec: Any) -> Any:
    return _options(spec).get("widgetType") or _type(spec)


def _control_name(options: Mapping[str, Any], base: str) -> str:
    named = options.get(base)
    if isinstance(named, str):
        return named
    prefix = options.get("control_prefix")
    return f"{prefix} {base}" if prefix else base


def _number_widgets(name: str, options: dict[str, Any], kind: str) -> list[WidgetSpec]:
    default = options.get("default")
    widgets = [WidgetSpec(name, 0 if default is None else default)]
    if kind == "INT":
        control = options.get("control_after_generate")
        if control is None:
            control = name in SEED_NAMES
        if control:
            label = control if isinstance(control, str) else "control_after_generate"
            widgets.append(WidgetSpec(label, "randomize", sent=False))
    return widgets


def _combo_widgets(name: str, spec: Any, options: dict[str, Any]) -> list[WidgetSpec]:
    if options.get("multi_select"):
        return [WidgetSpec(name, [], kind="list")]
    values = _combo_options(spec)
    default = options.get("default") or (
        values[0] if values else ("Loading..." if options.get("remote") else UNSET)
    )
    widgets = [WidgetSpec(name, default)]
    remote = options.get("remote")
    if isinstance(remote, Mapping):
        widgets.append(WidgetSpec("Auto-refresh after generation", False, sent=False))
        if remote.get("refresh_button"):
            widgets.append(WidgetSpec("refresh", "refresh"))
    if options.get("control_after_generate"):
        widgets.append(
            WidgetSpec(_control_name(options, "control_after_generate"), "randomize", sent=False)
        )
        widgets.append(WidgetSpec(_control_name(options, "control_filter_list"), "", sent=False))
    return widgets


_EDITOR_ONLY = {
    "WEBCAM": "its image is taken from the editor's webcam when queued",
    "LOAD_3D": "its images are rendered from the 3D scene in the editor when queued",
    "AUDIO_RECORD": "its audio is recorded by the editor's microphone when queued",
}


def _widgets_for(name: str, spec: Any, kind: str) -> list[WidgetSpec]:  # noqa: C901
    options = _options(spec)
    default = options.get("default")
    if kind in ("INT", "FLOAT"):
        return _number_widgets(name, options, kind)
    if kind == "BOOLEAN":
        return [WidgetSpec(name, False if default is None else default)]
    if kind == "STRING":
        dynamic = options.get("dynamicPrompts") is True
        text = "text" if options.get("multiline") else "value"
        return [
            WidgetSpec(name, "" if default is None else default, kind=text, dynamic_prompts=dynamic)
        ]
    if kind == "MARKDOWN":
        return [WidgetSpec(name, "" if default is None else default, kind="text")]
    if kind == "COMBO":
        return _combo_widgets(name, spec, options)
    if kind == "IMAGEUPLOAD":
        return [WidgetSpec(name, "image", sent=False)]
    if kind == "COLOR":
        return [WidgetSpec(name, default or "#000000")]
    if kind == "IMAGECOMPARE":
        return [WidgetSpec(name, ["", ""])]
    if kind == "CHART":
        return [WidgetSpec(name, options.get("data") or {})]
    if kind == "GALLERIA":
        return [WidgetSpec(name, options.get("images") or [])]
    if kind == "TEXTAREA":
        return [WidgetSpec(name, default or "")]
    if kind == "PREVIEW_3D":
        return [WidgetSpec("image", "", kind="fixed")]
    if kind == "AUDIO_UI":
        return [WidgetSpec(name, "", saved=False, kind="fixed")]
    if kind == "AUDIOUPLOAD":
        return [WidgetSpec(name, "", sent=False)]
    if kind == "LOAD_3D":
        buttons = [
            ("upload 3d model", "upload3dmodel"),
            ("upload extra resources", "uploadExtraResources"),
            ("clear", "clear"),
        ]
        return [WidgetSpec(label, value) for label, value in buttons] + [
            WidgetSpec("image", "", kind="editor", reason=_EDITOR_ONLY[kind])
        ]
    if kind in _EDITOR_ONLY:
        return [WidgetSpec(name, "", kind="editor", reason=_EDITOR_ONLY[kind])]
    return []


def _socket_type(spec: Any) -> Any:
    kind = _type(spec)
    if kind == MATCH_TYPE:
        template = _options(spec).get("template")
        allowed = template.get("allowed_types") if isinstance(template, Mapping) else None
        return allowed or "*"
    return kind


def _upload_wrapped(widgets: list[WidgetSpec], spec: Any) -> None:
    """An upload button makes its file combo report annotated paths (see `WidgetSpec.folder`)."""
    options = _options(spec)
    target = options.get("imageInputName")
    for index, widget in enumerate(widgets):
        if widget.name == target and widget.kind == "value":
            widgets[index] = WidgetSpec(
                widget.name,
                widget.default,
                kind="upload",
                folder=str(options.get("image_folder") or "input"),
                batch=bool(options.get("allow_batch")),
            )
            return


def build_shape(class_type: str, info: Mapping[str, Any]) -> Shape:
    """The editor's node for `class_type`, defined by `info` (its `/object_info` entry)."""
    inputs = definition_inputs(class_type, info)
    order = _ordered(inputs, info.get("input_order"))
    sockets: list[Socket] = []
    widgets: list[WidgetSpec] = []
    widget_sockets: list[Socket] = []
    for name in order:
        spec, _optional = inputs[name]
        options = _options(spec)
        kind = _widget_type(spec)
        if kind not in WIDGET_TYPES or options.get("forceInput"):
            sockets.append(Socket(name, _socket_type(spec)))
            continue
        made = _widgets_for(name, spec, kind)
        if kind == "IMAGEUPLOAD":
            _upload_wrapped(widgets, spec)
        widgets += made
        widget_sockets.append(Socket(name, _socket_type(spec), widget=name))
    if class_type == "PreviewAny":
        widgets.append(WidgetSpec("preview", "", saved=False, kind="text"))
    names = {w.name for w in widgets}
    counted = []
    for name, (spec, _optional) in inputs.items():
        force = bool(_options(spec).get("forceInput"))
        if name in names or force:
            seedlike = _options(spec).get("control_after_generate") or name in SEED_NAMES
            counted.append((name, force, 2 if seedlike else 1))
    return Shape(
        class_type=class_type,
        title=str(info.get("display_name") or info.get("name") or class_type),
        sockets=tuple(sockets + widget_sockets),
        widgets=tuple(widgets),
        outputs=_outputs(info),
        widget_inputs=tuple(counted),
        filename_replacements=class_type in _SAVE_NODES,
    )


def _outputs(info: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    types = info.get("output")
    names = info.get("output_name")
    types = types if isinstance(types, list) else []
    names = names if isinstance(names, list) else []
    outputs = []
    for index, kind in enumerate(types):
        name = names[index] if index < len(names) and names[index] else f"output_{index}"
        outputs.append((str(name), "COMBO" if isinstance(kind, list) else kind))
    return tuple(outputs)
