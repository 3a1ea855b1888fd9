"""Building a `Template` from a parsed file (a mapping), checking everything a job could trip on
later: every key known, every type and bound sound, every default within its bounds, every
`sets` target an input the graph really has (and a value there, not a link), every `openai`
field naming a parameter, and every model file the graph's loaders name listed in `models`.

Each problem raises `TemplateFileError` naming the file and the key (`parameters.steps.maximum`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NoReturn

from comfyfleet.jobs import GraphError, check_workflow
from comfyfleet.models import required_models
from comfyfleet.templates._errors import ParameterError, TemplateFileError
from comfyfleet.templates._model import Template
from comfyfleet.templates._params import RANDOM, Parameter, ParamType, Target

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A template name (and so a file stem): it appears in URLs and on command lines."""
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOP_KEYS = ("name", "description", "models", "preset", "parameters", "openai", "workflow")
_PARAMETER_KEYS = (
    "type",
    "default",
    "description",
    "sets",
    "minimum",
    "maximum",
    "multiple_of",
    "choices",
    "required",
)
_NUMERIC = (ParamType.INTEGER, ParamType.NUMBER)
_WITH_CHOICES = (ParamType.TEXT, ParamType.STRING, ParamType.INTEGER, ParamType.NUMBER)
_TYPE_NAMES = tuple(t.value for t in ParamType)
_TYPES = ", ".join(_TYPE_NAMES)
_TEXTS = (ParamType.TEXT, ParamType.STRING)
_OPENAI_FIELDS: dict[str, tuple[tuple[ParamType, ...], int | None, str]] = {
    "prompt": (_TEXTS, None, "text parameters"),
    "size": ((ParamType.INTEGER,), 2, "two integer parameters: [width, height]"),
    "n": ((ParamType.INTEGER,), 1, "one integer parameter (the batch size)"),
    "image": ((ParamType.IMAGE,), None, "image parameters"),
    "mask": ((ParamType.IMAGE,), 1, "one image parameter"),
    "quality": (_TEXTS, 1, "one string parameter"),
    "style": (_TEXTS, 1, "one string parameter"),
    "background": (_TEXTS, 1, "one string parameter"),
}
"""The OpenAI images fields a template's `openai` block may map: the parameter types each
takes, how many parameters (None: one or more), and how a message says so."""
_OPENAI_KNOWN = ", ".join(_OPENAI_FIELDS)


def parse_template(data: Any, *, file: str, default_name: str) -> Template:
    """The template a file's content describes; `default_name` (the file's stem) is its name
    unless the file says `name:`."""
    return _Parser(file).template(data, default_name)


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str | None, problem: str) -> NoReturn:
        raise TemplateFileError(self.file, key, problem)

    def template(self, data: Any, default_name: str) -> Template:
        if not isinstance(data, dict):
            self.fail(None, "the top level must be a mapping (name, parameters, workflow, ...)")
        unknown = [key for key in data if key not in _TOP_KEYS]
        if unknown:
            self.fail(str(unknown[0]), f"unknown key (known: {', '.join(_TOP_KEYS)})")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            self.fail(
                "name",
                f"{name!r} is not a template name: 1-64 letters, digits, '.', '_' or '-'",
            )
        workflow = self.workflow(data.get("workflow"))
        parameters = self.parameters(data.get("parameters", {}), workflow)
        return Template(
            name=name,
            workflow=workflow,
            parameters=parameters,
            description=self.text(data, "description"),
            models=self.models(data.get("models"), workflow),
            preset=self.preset(data.get("preset")),
            openai=self.openai(data.get("openai"), parameters),
            source=self.file,
        )

    def text(self, data: Mapping[str, Any], key: str, where: str = "") -> str:
        value = data.get(key, "")
        if not isinstance(value, str):
            self.fail(f"{where}{key}", "must be a string")
        return value

    def workflow(self, value: Any) -> dict[str, Any]:
        if value is None:
            self.fail("workflow", "missing: the API-format graph (node id -> class_type, inputs)")
        try:
            check_workflow(value)
        except GraphError as exc:
            problem = exc.message if exc.hint is None else f"{exc.message} ({exc.hint})"
            self.fail("workflow", problem)
        return {str(node_id): node for node_id, node in value.items()}

    def preset(self, value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or not NAME.fullmatch(value)):
            self.fail("preset", "must be the name of a model preset (sd15, sdxl-base, ...)")
        return value

    def parameters(self, value: Any, workflow: Mapping[str, Any]) -> dict[str, Parameter]:
        if not isinstance(value, dict):
            self.fail("parameters", "must be a mapping of parameter names to their declarations")
        return {
            str(name): self.parameter(str(name), spec, workflow) for name, spec in value.items()
        }

    def parameter(self, name: str, spec: Any, workflow: Mapping[str, Any]) -> Parameter:
        key = f"parameters.{name}"
        if not PARAMETER_NAME.fullmatch(name):
            self.fail(key, "a parameter name is a letter or '_', then letters, digits or '_'")
        if not isinstance(spec, dict):
            self.fail(key, "must be a mapping with at least 'type' and 'sets'")
        unknown = [k for k in spec if k not in _PARAMETER_KEYS]
        if unknown:
            self.fail(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(_PARAMETER_KEYS)})")
        declared = spec.get("type")
        if declared not in _TYPE_NAMES:
            self.fail(f"{key}.type", f"unknown type {declared!r} (known: {_TYPES})")
        kind = ParamType(declared)
        bare = Parameter(
            name=name,
            type=kind,
            sets=self.targets(f"{key}.sets", spec.get("sets"), workflow),
            description=self.text(spec, "description", f"{key}."),
            **self.bounds(key, kind, spec),
        )
        choices = self.choices(key, bare, spec.get("choices"))
        parameter = replace(bare, choices=choices)
        return self.with_default(key, parameter, spec)

    def bounds(self, key: str, kind: ParamType, spec: Mapping[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for bound in ("minimum", "maximum", "multiple_of"):
            value = spec.get(bound)
            if value is None:
                continue
            if kind not in _NUMERIC:
                self.fail(f"{key}.{bound}", f"only integer and number parameters have a {bound}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(f"{key}.{bound}", "must be a number")
            found[bound] = value
        low, high = found.get("minimum"), found.get("maximum")
        if low is not None and high is not None and low > high:
            self.fail(f"{key}.maximum", f"{high} is below the minimum {low}")
        if found.get("multiple_of") is not None and found["multiple_of"] <= 0:
            self.fail(f"{key}.multiple_of", "must be above 0")
        return found

    def choices(self, key: str, bare: Parameter, value: Any) -> tuple[Any, ...] | None:
        if value is None:
            return None
        if bare.type not in _WITH_CHOICES:
            self.fail(f"{key}.choices", f"a {bare.type} parameter takes no choices")
        if not isinstance(value, list) or not value:
            self.fail(f"{key}.choices", "must be a non-empty list")
        try:
            return tuple(bare.check(choice) for choice in value)
        except ParameterError as exc:
            self.fail(f"{key}.choices", exc.message)

    def with_default(self, key: str, parameter: Parameter, spec: Mapping[str, Any]) -> Parameter:
        required = spec.get("required")
        if required is not None and not isinstance(required, bool):
            self.fail(f"{key}.required", "must be true or false")
        if "default" not in spec or spec["default"] is None:
            return replace(parameter, required=required is not False)
        if required:
            self.fail(f"{key}.required", "a parameter with a default is never required")
        default = spec["default"]
        if default == RANDOM and parameter.type is ParamType.INTEGER:
            return replace(parameter, random=True, required=False)
        if default == RANDOM and parameter.type in (*_NUMERIC, ParamType.BOOLEAN):
            self.fail(f"{key}.default", "'random' is a default for integer parameters only")
        try:
            value = parameter.check(default)
        except ParameterError as exc:
            self.fail(f"{key}.default", exc.message)
        return replace(parameter, default=value, has_default=True, required=False)

    def targets(self, key: str, value: Any, workflow: Mapping[str, Any]) -> tuple[Target, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(key, "must list the inputs it sets, as 'NODE.INPUT' (\"3.seed\")")
        found: list[Target] = []
        for item in items:
            target = self.target(key, item, workflow)
            if target not in found:
                found.append(target)
        return tuple(found)

    def target(self, key: str, item: Any, workflow: Mapping[str, Any]) -> Target:
        if not isinstance(item, str) or "." not in item:
            self.fail(key, f"{item!r} must be 'NODE.INPUT' (\"3.seed\")")
        node_id, _, input_name = item.partition(".")
        for at, char in enumerate(item):  # node ids may hold dots; take the one the graph has
            if char == "." and item[:at] in workflow:
                node_id, input_name = item[:at], item[at + 1 :]
                break
        node = workflow.get(node_id)
        if node is None:
            self.fail(key, f"'{item}': the graph has no node '{node_id}'")
        inputs = node.get("inputs", {})
        if input_name not in inputs:
            shown = ", ".join(inputs) or "none"
            self.fail(
                key,
                f"'{item}': node {node_id} ({node['class_type']}) has no input '{input_name}'"
                f" (its inputs: {shown})",
            )
        if isinstance(inputs[input_name], list):
            self.fail(key, f"'{item}': input '{input_name}' of node {node_id} is a link")
        return Target(node_id, input_name)

    def models(self, value: Any, workflow: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        loaded: dict[str, list[str]] = {}
        for need in required_models(workflow):
            if not need.is_url and need.value not in loaded.setdefault(need.folder_type, []):
                loaded[need.folder_type].append(need.value)
        if value is None:
            return {kind: tuple(names) for kind, names in loaded.items()}
        if not isinstance(value, dict):
            self.fail("models", "must map folder types to lists of file names")
        declared: dict[str, tuple[str, ...]] = {}
        for kind, names in value.items():
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not all(_is_file_name(n) for n in names):
                self.fail(f"models.{kind}", "must list file names (relative, without '..')")
            declared[str(kind)] = tuple(names)
        for kind, names in loaded.items():
            for name in names:
                if name not in declared.get(kind, ()):
                    self.fail(f"models.{kind}", f"the graph loads '{name}', which is not listed")
        return declared

    def openai(
        self, value: Any, parameters: Mapping[str, Parameter]
    ) -> dict[str, str | tuple[str, ...]] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail("openai", "must map OpenAI fields to parameter names")
        mapping: dict[str, str | tuple[str, ...]] = {}
        for field, names in value.items():
            listed = [names] if isinstance(names, str) else names
            if not isinstance(listed, list) or not listed:
                self.fail(f"openai.{field}", "must name a parameter or list parameters")
            for name in listed:
                if name not in parameters:
                    known = ", ".join(parameters) or "none"
                    self.fail(f"openai.{field}", f"no parameter {name!r} (known: {known})")
            self.openai_field(str(field), [parameters[name] for name in listed])
            mapping[str(field)] = names if isinstance(names, str) else tuple(names)
        if "prompt" not in mapping:
            self.fail("openai.prompt", "missing: every OpenAI images request has a prompt")
        return mapping

    def openai_field(self, field: str, targets: list[Parameter]) -> None:
        """What an OpenAI field can set: `size` two integers (width, height), `n` and `mask` one
        parameter, `image` image parameters, the others text."""
        rule = _OPENAI_FIELDS.get(field)
        if rule is None:
            self.fail(f"openai.{field}", f"not an OpenAI images field (known: {_OPENAI_KNOWN})")
        types, count, wanted = rule
        if count is not None and len(targets) != count:
            self.fail(f"openai.{field}", f"must name {wanted}")
        for target in targets:
            if target.type not in types:
                self.fail(
                    f"openai.{field}", f"must name {wanted} ('{target.name}' is {target.type})"
                )


def _is_file_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and ".." not in name.split("/")
    )
