"""Proposing a template's parameters from a saved API-format graph: the inputs people change
between runs (prompt texts, seed, steps, cfg, sampler, scheduler, denoise, size, batch size,
loaded images), each with the graph's value as its default.

Node schemas (ComfyUI's `/object_info`) are used where given: their bounds and choices, which
strings are free text, which integers are seeds (`control_after_generate`), which inputs take
an uploaded image. Without them, input names decide and ComfyUI's usual bounds apply. A text
encoder is `prompt` or `negative` after the sampler input it ends up in. The user keeps or drops
each proposal; `template_document` turns the kept ones into a template that loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.templates._errors import ParameterError
from comfyfleet.templates._params import Parameter, ParamType
from comfyfleet.templates._parse import parse_template

SEED_MAX = 2**64 - 1
_BY_INPUT: dict[str, tuple[str, ParamType, dict[str, Any]]] = {
    # input name -> (parameter name, type, ComfyUI's usual bounds when no schema says)
    "seed": ("seed", ParamType.INTEGER, {"minimum": 0, "maximum": SEED_MAX}),
    "noise_seed": ("seed", ParamType.INTEGER, {"minimum": 0, "maximum": SEED_MAX}),
    "steps": ("steps", ParamType.INTEGER, {"minimum": 1, "maximum": 10000}),
    "cfg": ("cfg", ParamType.NUMBER, {"minimum": 0, "maximum": 100}),
    "sampler_name": ("sampler", ParamType.STRING, {}),
    "scheduler": ("scheduler", ParamType.STRING, {}),
    "denoise": ("denoise", ParamType.NUMBER, {"minimum": 0, "maximum": 1}),
    "width": ("width", ParamType.INTEGER, {"minimum": 16, "maximum": 16384, "multiple_of": 8}),
    "height": ("height", ParamType.INTEGER, {"minimum": 16, "maximum": 16384, "multiple_of": 8}),
    "batch_size": ("batch_size", ParamType.INTEGER, {"minimum": 1, "maximum": 4096}),
}
_TEXT_INPUTS = frozenset({"text", "text_g", "text_l", "prompt"})
_IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "mask"}
_OTHER_UPLOADS = ("video_upload", "audio_upload")
_SAMPLER_SIDES = {"positive": "prompt", "negative": "negative"}
_ORDER = ("image", "mask", "prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler")


@dataclass(frozen=True)
class Proposal:
    """One proposed parameter: its declaration as a template file holds it (`type`,
    `default`, bounds, `sets`), and the input it was found at."""

    name: str
    declaration: dict[str, Any]
    node: str
    class_type: str
    input: str

    def describe(self) -> str:
        shown = "random" if self.declaration.get("default") == "random" else None
        value = shown or repr(self.declaration.get("default", "(required)"))
        if len(value) > 50:
            value = value[:47] + "..."
        return (
            f"{self.name}: {self.declaration['type']} = {value}  [{self.class_type}.{self.input}]"
        )


@dataclass
class _Found:
    name: str
    type: ParamType
    bounds: dict[str, Any] = field(default_factory=dict)
    choices: list[Any] | None = None
    default: Any = None


def propose_parameters(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any] | None = None
) -> list[Proposal]:
    """The parameters worth declaring for `workflow`, in node order; a name found on several
    nodes gets `_2`, `_3`, ... after the first."""
    info = object_info or {}
    sides = _text_sides(workflow)
    proposals: list[Proposal] = []
    taken: dict[str, int] = {}
    for node_id, node in _nodes(workflow):
        class_type = str(node.get("class_type", ""))
        spec = _inputs_spec(info.get(class_type))
        for input_name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list):  # a link, not a widget
                continue
            found = _classify(
                class_type, input_name, value, spec.get(input_name), sides.get(node_id)
            )
            if found is None:
                continue
            taken[found.name] = taken.get(found.name, 0) + 1
            name = found.name if taken[found.name] == 1 else f"{found.name}_{taken[found.name]}"
            declaration = _declaration(found, f"{node_id}.{input_name}")
            proposals.append(Proposal(name, declaration, node_id, class_type, input_name))
    return sorted(proposals, key=_rank)


def _rank(proposal: Proposal) -> int:
    """What a user sets first comes first (the images, the prompts); graph order otherwise."""
    base = proposal.name.rstrip("0123456789").removesuffix("_")
    return _ORDER.index(base) if base in _ORDER else len(_ORDER)


def template_document(
    workflow: Mapping[str, Any],
    proposals: Iterable[Proposal],
    *,
    name: str,
    description: str = "",
) -> dict[str, Any]:
    """A template file's content with the kept proposals; checked by loading it, so what is
    written always loads (a `TemplateFileError` otherwise, naming the key)."""
    document: dict[str, Any] = {"name": name, "description": description}
    document["parameters"] = {p.name: p.declaration for p in proposals}
    document["workflow"] = {str(k): v for k, v in workflow.items()}
    template = parse_template(document, file=f"{name}.yaml", default_name=name)
    if template.models:
        document["models"] = {kind: list(names) for kind, names in template.models.items()}
    order = ("name", "description", "models", "parameters", "workflow")
    return {key: document[key] for key in order if key in document}


def _nodes(workflow: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    def order(item: tuple[str, Any]) -> tuple[int, int, str]:
        node_id = item[0]
        return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)

    items = [(str(k), v) for k, v in workflow.items() if isinstance(v, Mapping)]
    return sorted(items, key=order)


def _text_sides(workflow: Mapping[str, Any]) -> dict[str, str]:
    """Which text encoders feed a sampler's `positive` or `negative` (through any chain of
    conditioning nodes): node id -> "prompt" | "negative"."""
    sides: dict[str, str] = {}
    for _, node in _nodes(workflow):
        inputs = node.get("inputs") or {}
        for side, name in _SAMPLER_SIDES.items():
            link = inputs.get(side)
            if isinstance(link, list) and link:
                for upstream in _upstream(workflow, str(link[0])):
                    sides.setdefault(upstream, name)
    return sides


def _upstream(workflow: Mapping[str, Any], start: str) -> list[str]:
    seen: list[str] = []
    todo = [start]
    while todo:
        node_id = todo.pop()
        node = workflow.get(node_id)
        if node_id in seen or not isinstance(node, Mapping):
            continue
        seen.append(node_id)
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and value and str(value[0]) in workflow:
                todo.append(str(value[0]))
    return seen


def _inputs_spec(class_info: Any) -> dict[str, Any]:
    if not isinstance(class_info, Mapping):
        return {}
    declared = class_info.get("input") or {}
    found: dict[str, Any] = {}
    for group in ("required", "optional"):
        section = declared.get(group) if isinstance(declared, Mapping) else None
        if isinstance(section, Mapping):
            found.update(section)
    return found


def _classify(
    class_type: str, input_name: str, value: Any, spec: Any, side: str | None
) -> _Found | None:
    kind, options = _schema_kind(spec)
    if input_name == "image" and (class_type in _IMAGE_LOADERS or options.get("image_upload")):
        return _Found(_IMAGE_LOADERS.get(class_type, "image"), ParamType.IMAGE)
    if any(options.get(flag) for flag in _OTHER_UPLOADS):
        return None  # an uploaded video or audio file: not a type templates take
    if isinstance(value, str) and (
        input_name in _TEXT_INPUTS or (kind == "STRING" and options.get("multiline"))
    ):
        return _Found(side or "prompt", ParamType.TEXT, default=value)
    if kind == "INT" and options.get("control_after_generate"):
        return _Found("seed", ParamType.INTEGER, _schema_bounds(options), default="random")
    if input_name not in _BY_INPUT:
        return None
    name, param_type, usual = _BY_INPUT[input_name]
    bounds = _schema_bounds(options) if kind in ("INT", "FLOAT") else dict(usual)
    found = _Found(name, param_type, bounds, default="random" if name == "seed" else value)
    if kind == "COMBO":
        found.choices = list(options.get("options") or [])
    return found


def _schema_kind(spec: Any) -> tuple[Any, dict[str, Any]]:
    """(type, options) of one input's schema: `["INT", {...}]`, `[[choices...], {...}]` or
    `["COMBO", {"options": [...]}]`; (None, {}) when unknown."""
    if not isinstance(spec, list) or not spec:
        return None, {}
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    kind = spec[0]
    if isinstance(kind, list):
        return "COMBO", {**options, "options": kind}
    return kind, dict(options)


def _schema_bounds(options: Mapping[str, Any]) -> dict[str, Any]:
    found = {
        bound: options[key]
        for key, bound in (("min", "minimum"), ("max", "maximum"))
        if isinstance(options.get(key), int | float) and not isinstance(options.get(key), bool)
    }
    step = options.get("step")
    if isinstance(step, int) and not isinstance(step, bool) and step > 1:
        found["multiple_of"] = step
    return found


def _declaration(found: _Found, target: str) -> dict[str, Any]:
    """The declaration with the bounds the graph's own value keeps to (a bound its value
    breaks is dropped: the saved graph must stay a valid default)."""
    declaration: dict[str, Any] = {"type": str(found.type)}
    if found.type is not ParamType.IMAGE:
        declaration["default"] = found.default
    bounds = dict(found.bounds)
    if found.default != "random" and found.type is not ParamType.IMAGE:
        for bound in list(bounds):
            probe = Parameter(found.name, found.type, (), **{bound: bounds[bound]})
            try:
                probe.check(found.default)
            except ParameterError:
                del bounds[bound]
    declaration.update(bounds)
    if found.choices and found.default in found.choices:
        declaration["choices"] = found.choices
    declaration["sets"] = [target]
    return declaration
