"""A template's parameters (the JSON Schema `/v1/templates/{name}` answers) as form fields.

The fields carry the declared bounds as HTML attributes (a number field's min, max and step,
the choices of a select), so a browser shows them, but the form does not let the browser refuse
a value: it is sent, and the API's own check (the templates package's) says what is wrong, shown
next to the field it names. One validation, the API's, whatever the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_LONG_TEXT = "text"


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str
    """`textarea`, `select`, `number`, `checkbox`, `image` or `text`."""
    json_type: str
    """How the value travels: `integer`, `number`, `boolean` or `string`."""
    description: str = ""
    value: str = ""
    required: bool = False
    random: bool = False
    minimum: str | None = None
    maximum: str | None = None
    step: str | None = None
    choices: list[str] = field(default_factory=list)

    @property
    def hint(self) -> str:
        """The bounds in words, shown under the field."""
        parts = []
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"{self.minimum} to {self.maximum}")
        elif self.minimum is not None:
            parts.append(f"at least {self.minimum}")
        elif self.maximum is not None:
            parts.append(f"at most {self.maximum}")
        if self.step not in (None, "1", "any"):
            parts.append(f"a multiple of {self.step}")
        if self.random:
            parts.append("left empty: a random value")
        return "; ".join(parts)


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    required = set(schema.get("required") or [])
    return [
        _field(name, spec, name in required)
        for name, spec in (schema.get("properties") or {}).items()
        if isinstance(spec, dict)
    ]


def _field(name: str, spec: dict[str, Any], required: bool) -> FormField:
    json_type = str(spec.get("type") or "string")
    declared = str(spec.get("x-type") or json_type)
    default = spec.get("default")
    common: dict[str, Any] = {
        "name": name,
        "label": name.replace("_", " ").capitalize(),
        "json_type": json_type,
        "description": str(spec.get("description") or ""),
        "required": required,
        "random": bool(spec.get("x-random")),
        "value": _text(default),
    }
    if "enum" in spec:
        return FormField(kind="select", choices=[_text(c) for c in spec["enum"]], **common)
    if declared == "image":
        return FormField(kind="image", **common)
    if json_type == "boolean":
        return FormField(kind="checkbox", **common)
    if json_type in ("integer", "number"):
        step = spec.get("multipleOf")
        return FormField(
            kind="number",
            minimum=_bound(spec.get("minimum")),
            maximum=_bound(spec.get("maximum")),
            step=_text(step) if step is not None else ("1" if json_type == "integer" else "any"),
            **common,
        )
    return FormField(kind="textarea" if declared == _LONG_TEXT else "text", **common)


def _bound(value: Any) -> str | None:
    return None if value is None else _text(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)
