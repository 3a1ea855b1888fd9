"""Filling a template in: checking the given values, adding defaults and random seeds, and
setting every target input in a fresh copy of the graph.

`resolve_params` is separate from `apply_params` so that a caller can keep what a job actually
ran with (the random seed it drew): `template.apply(template.resolve(params))` sets the same
values as the resolved mapping shows, since resolving resolved values changes nothing.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping
from typing import Any

from comfyfleet.templates._errors import ParameterError
from comfyfleet.templates._params import Parameter

_SEED_SPAN = 2**64
"""Random integers without a declared maximum are drawn from 0 (or the minimum) up to 2**64-1,
the range of ComfyUI's seed inputs."""


def resolve_params(
    name: str, parameters: Mapping[str, Parameter], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Every parameter's value for a job, in declared order, or `ParameterError`."""
    if not isinstance(given, Mapping):
        raise ParameterError(
            "'params' must be an object of parameter names and values",
            parameter=None,
            known=list(parameters),
        )
    unknown = [key for key in given if key not in parameters]
    if unknown:
        known = ", ".join(parameters) or "none"
        raise ParameterError(
            f"template '{name}' has no parameter '{unknown[0]}' (known: {known})",
            parameter=str(unknown[0]),
            known=list(parameters),
        )
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        if key in given and given[key] is not None:
            values[key] = parameter.check(given[key])
        elif parameter.random:
            values[key] = _draw(parameter)
        elif parameter.has_default:
            values[key] = copy.deepcopy(parameter.default)
        elif parameter.required:
            raise ParameterError(
                f"parameter '{key}' is required ({_what(parameter)})",
                parameter=key,
                bound={"required": True},
            )
    return values


def apply_params(
    workflow: Mapping[str, Any], parameters: Mapping[str, Parameter], values: Mapping[str, Any]
) -> dict[str, Any]:
    """A deep copy of `workflow` with each value set on every input its parameter targets.
    The targets were checked when the template was loaded, so each node and input exists."""
    graph = copy.deepcopy(dict(workflow))
    for key, parameter in parameters.items():
        if key not in values:
            continue
        for target in parameter.sets:
            graph[target.node]["inputs"][target.input] = copy.deepcopy(values[key])
    return graph


def _draw(parameter: Parameter) -> int:
    low = int(parameter.minimum) if parameter.minimum is not None else 0
    high = int(parameter.maximum) if parameter.maximum is not None else low + _SEED_SPAN - 1
    step = int(parameter.multiple_of) if parameter.multiple_of else 1
    first = -(-low // step) * step  # the smallest multiple of step at or above low
    count = (high - first) // step + 1
    return first + secrets.randbelow(count) * step


def _what(parameter: Parameter) -> str:
    if parameter.type == "image":
        return "an image: a URL, data: URI, base64 or asset:<id>"
    return f"a {parameter.type}"
