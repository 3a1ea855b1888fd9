"""Checking a prompt the way ComfyUI does, against the fleet's node definitions, so that a graph
ComfyUI would refuse gets ComfyUI's own 400 at once instead of a failed job later.

The answer has ComfyUI's shape: `{"error": {type, message, details, extra_info}, "node_errors":
{node_id: {errors: [...], dependent_outputs: [...], class_type}}}`, with the error types ComfyUI
uses (`invalid_prompt`, `prompt_no_outputs`, `prompt_outputs_failed_validation` with
`required_input_missing`, `bad_linked_input`, `return_type_mismatch`, `invalid_input_type`,
`value_smaller_than_min`, `value_bigger_than_max`, `value_not_in_list`).

One difference on purpose: choices that name files (model files, uploaded images) are not
checked against the lists the instances reported. The fleet downloads missing models before a
job runs, and an uploaded image reaches every instance: a list read minutes ago does not say
what a job will find.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

_NUMBERS = {"INT": int, "FLOAT": float}
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload")


@dataclass
class PromptInvalid(Exception):
    """A prompt ComfyUI would refuse, with what ComfyUI answers for it."""

    error: dict[str, Any]
    node_errors: dict[str, Any] | list[Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def output_classes(info: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(name for name, spec in info.items() if _spec(spec).get("output_node"))


def validate_prompt(
    prompt: Any, info: Mapping[str, Any], file_inputs: Collection[tuple[str, str]] = ()
) -> None:
    """Raise `PromptInvalid` where ComfyUI would refuse `prompt`; `file_inputs` are the
    (class, input) pairs whose choices are files (not checked, see above)."""
    if not isinstance(prompt, dict) or not prompt:
        raise PromptInvalid(_error("no_prompt", "No prompt provided"), [])
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str):
            message = "Cannot execute because a node is missing the class_type property."
            raise PromptInvalid(_error("invalid_prompt", message, f"Node ID '#{node_id}'"), [])
        if class_type not in info:
            message = f"Cannot execute because node {class_type} does not exist."
            details = f"Node ID '#{node_id}'"
            raise PromptInvalid(_error("invalid_prompt", message, details), [])
    outputs = [
        n for n, node in prompt.items() if _spec(info[node["class_type"]]).get("output_node")
    ]
    if not outputs:
        raise PromptInvalid(_error("prompt_no_outputs", "Prompt has no outputs"), [])
    checker = _Checker(prompt, info, frozenset(file_inputs))
    node_errors: dict[str, Any] = {}
    for output in outputs:
        checker.check(str(output))
    for node_id, errors in checker.errors.items():
        if errors:
            dependent = [o for o in outputs if node_id in checker.reach(str(o))]
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": dependent,
                "class_type": prompt[node_id]["class_type"],
            }
    if node_errors:
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
        raise PromptInvalid(error, node_errors)


def _spec(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Checker:
    def __init__(
        self,
        prompt: dict[str, Any],
        info: Mapping[str, Any],
        file_inputs: frozenset[tuple[str, str]],
    ) -> None:
        self.prompt = prompt
        self.info = info
        self.file_inputs = file_inputs
        self.errors: dict[str, list[dict[str, Any]]] = {}

    def reach(self, node_id: str) -> set[str]:
        """The nodes `node_id` depends on, itself included."""
        seen: set[str] = set()
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.prompt:
                continue
            seen.add(current)
            for value in _spec(self.prompt[current]).get("inputs", {}).values():
                if _is_link(value):
                    stack.append(str(value[0]))
        return seen

    def check(self, node_id: str) -> None:
        if node_id in self.errors:
            return
        found: list[dict[str, Any]] = []
        self.errors[node_id] = found
        node = self.prompt[node_id]
        spec = _spec(self.info[node["class_type"]])
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        declared = _spec(spec.get("input"))
        optional = _spec(declared.get("optional"))
        for name, config in _spec(declared.get("required")).items():
            if name not in inputs:
                found.append(
                    _error(
                        "required_input_missing",
                        "Required input is missing",
                        name,
                        input_name=name,
                    )
                )
                continue
            self._input(node_id, node["class_type"], name, config, inputs[name], found)
        for name, config in optional.items():
            if name in inputs:
                self._input(node_id, node["class_type"], name, config, inputs[name], found)

    def _input(
        self,
        node_id: str,
        class_type: str,
        name: str,
        config: Any,
        value: Any,
        found: list[dict[str, Any]],
    ) -> None:
        config = list(config) if isinstance(config, list | tuple) else [config]
        kind = config[0] if config else None
        options = _spec(config[1]) if len(config) > 1 else {}
        if isinstance(value, list):
            self._link(name, config, kind, value, found)
            return
        if isinstance(kind, str) and kind in _NUMBERS:
            self._number(name, config, kind, options, value, found)
        elif kind == "COMBO" or isinstance(kind, list):
            choices = options.get("options") if kind == "COMBO" else kind
            files = (class_type, name) in self.file_inputs or any(
                options.get(flag) for flag in _UPLOAD_FLAGS
            )
            if isinstance(choices, list) and not files and value not in choices:
                shown = ", ".join(repr(c) for c in choices[:20])
                found.append(
                    _error(
                        "value_not_in_list",
                        "Value not in list",
                        f"{name}: '{value}' not in [{shown}]",
                        input_name=name,
                        input_config=config,
                        received_value=value,
                    )
                )

    def _link(
        self, name: str, config: list[Any], kind: Any, value: list[Any], found: list[dict[str, Any]]
    ) -> None:
        if not _is_link(value) or str(value[0]) not in self.prompt:
            found.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [string, int]",
                    name,
                    input_name=name,
                    input_config=config,
                    received_value=value,
                )
            )
            return
        source_id, slot = str(value[0]), int(value[1])
        source = _spec(self.info.get(self.prompt[source_id].get("class_type"), {}))
        returned = list(source.get("output") or [])
        received = returned[slot] if 0 <= slot < len(returned) else None
        if not _types_match(received, kind):
            found.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({kind})",
                    input_name=name,
                    input_config=config,
                    received_type=received,
                    linked_node=value,
                )
            )
        self.check(source_id)

    @staticmethod
    def _number(
        name: str,
        config: list[Any],
        kind: str,
        options: dict[str, Any],
        value: Any,
        found: list[dict[str, Any]],
    ) -> None:
        try:
            number = _NUMBERS[kind](value)
        except (TypeError, ValueError, OverflowError) as exc:
            found.append(
                _error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {kind} value",
                    f"{name}, {value}, {exc}",
                    input_name=name,
                    input_config=config,
                    received_value=value,
                    exception_message=str(exc),
                )
            )
            return
        low, high = options.get("min"), options.get("max")
        if isinstance(low, int | float) and number < low:
            message = f"Value {number} smaller than min of {low}"
            found.append(
                _error(
                    "value_smaller_than_min", message, name, input_name=name, input_config=config
                )
            )
        if isinstance(high, int | float) and number > high:
            message = f"Value {number} bigger than max of {high}"
            found.append(
                _error("value_bigger_than_max", message, name, input_name=name, input_config=config)
            )


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _types_match(received: Any, wanted: Any) -> bool:
    """ComfyUI's rule: `*` matches anything; otherwise the comma-separated type sets must
    share... every received type must be accepted."""
    if received is None:
        return False
    if not isinstance(received, str) or not isinstance(wanted, str):
        return True  # a list of choices fed by a link (a primitive): ComfyUI lets it through
    if "*" in (received, wanted):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))
