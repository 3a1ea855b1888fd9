"""Declared parameters: their types, bounds and targets, and checking one value against them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from comfyfleet.templates._errors import ParameterError


class ParamType(StrEnum):
    TEXT = "text"
    """Free text (a prompt): any string."""
    STRING = "string"
    """A short string, usually one of `choices` (a sampler name)."""
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    IMAGE = "image"
    """A media input: a URL, a `data:` URI, base64, or `asset:<id>`, as `/v1` jobs take."""


RANDOM = "random"
"""`default: random` (integers only): a fresh value within the bounds for every job."""

_STRINGS = (ParamType.TEXT, ParamType.STRING, ParamType.IMAGE)
_SHOWN = 60
"""How much of a refused value a message quotes."""


@dataclass(frozen=True)
class Target:
    """One input a parameter sets: `node.input` in the graph."""

    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


@dataclass(frozen=True)
class Parameter:
    """One declared parameter. `default` is meaningful when `has_default`; `random` stands for
    `default: random`. A parameter without a default is required unless `required: false` says
    otherwise; then the graph's own value stays when it is not given."""

    name: str
    type: ParamType
    sets: tuple[Target, ...]
    description: str = ""
    default: Any = None
    has_default: bool = False
    random: bool = False
    required: bool = True
    minimum: int | float | None = None
    maximum: int | float | None = None
    multiple_of: int | float | None = None
    choices: tuple[Any, ...] | None = None

    def bounds(self) -> dict[str, Any]:
        """The bounds as declared, the unset ones left out."""
        found = {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "multiple_of": self.multiple_of,
            "choices": list(self.choices) if self.choices is not None else None,
        }
        return {key: value for key, value in found.items() if value is not None}

    def check(self, value: Any) -> Any:
        """`value` as the graph gets it (an integral float as an int, an int as a float for a
        number), or `ParameterError` naming this parameter and the bound it breaks."""
        value = self._typed(value)
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(str(c) for c in self.choices)
            raise ParameterError(
                f"parameter '{self.name}' must be one of {shown} (got {_show(value)})",
                parameter=self.name,
                bound={"choices": list(self.choices)},
            )
        if self.type in (ParamType.INTEGER, ParamType.NUMBER):
            self._check_range(value)
        return value

    def _typed(self, value: Any) -> Any:
        kind = self.type
        if kind in _STRINGS:
            if not isinstance(value, str):
                raise self._wrong_type(value, "a string")
            if kind is ParamType.IMAGE and not value.strip():
                raise self._wrong_type(value, "an image: a URL, data: URI, base64 or asset:<id>")
            return value
        if kind is ParamType.BOOLEAN:
            if not isinstance(value, bool):
                raise self._wrong_type(value, "true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong_type(value, "an integer" if kind is ParamType.INTEGER else "a number")
        if not math.isfinite(value):
            raise self._wrong_type(value, "a finite number")
        if kind is ParamType.INTEGER:
            if isinstance(value, float) and not value.is_integer():
                raise self._wrong_type(value, "an integer")
            return int(value)
        return float(value)

    def _check_range(self, value: int | float) -> None:
        if self.minimum is not None and value < self.minimum:
            self._out_of_bounds(value, "minimum", f"at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            self._out_of_bounds(value, "maximum", f"at most {self.maximum}")
        step = self.multiple_of
        if step is not None and not _is_multiple(value, step):
            self._out_of_bounds(value, "multiple_of", f"a multiple of {step}")

    def _out_of_bounds(self, value: Any, bound: str, wanted: str) -> None:
        raise ParameterError(
            f"parameter '{self.name}' must be {wanted} (got {_show(value)})",
            parameter=self.name,
            bound={bound: getattr(self, bound)},
        )

    def _wrong_type(self, value: Any, wanted: str) -> ParameterError:
        return ParameterError(
            f"parameter '{self.name}' must be {wanted} (got {_show(value)})",
            parameter=self.name,
            bound={"type": str(self.type)},
        )


def _is_multiple(value: int | float, step: int | float) -> bool:
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    ratio = value / step
    return math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-9)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
