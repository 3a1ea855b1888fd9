"""A template's parameters as JSON Schema (draft 2020-12), for clients that build forms or
check values before they send them. What JSON Schema cannot say is in `x-` keywords:
`x-type` (text, string, image, ...: a text area, a field, an upload), `x-random` (left out,
the parameter gets a fresh random value) and `x-sets` (the inputs it sets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfleet.templates._params import Parameter, ParamType

_JSON_TYPES = {
    ParamType.TEXT: "string",
    ParamType.STRING: "string",
    ParamType.IMAGE: "string",
    ParamType.INTEGER: "integer",
    ParamType.NUMBER: "number",
    ParamType.BOOLEAN: "boolean",
}
_IMAGE_NOTE = "an image: an http(s), s3:// or az:// URL, a data: URI, base64, or asset:<id>"


def parameters_schema(
    name: str, description: str, parameters: Mapping[str, Parameter]
) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": name,
        "description": description,
        "type": "object",
        "properties": {key: parameter_schema(p) for key, p in parameters.items()},
        "required": [key for key, p in parameters.items() if p.required],
        "additionalProperties": False,
    }


def parameter_schema(parameter: Parameter) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _JSON_TYPES[parameter.type], "x-type": str(parameter.type)}
    description = parameter.description
    if parameter.type is ParamType.IMAGE:
        out["contentMediaType"] = "image/*"
        description = f"{description} ({_IMAGE_NOTE})" if description else _IMAGE_NOTE
    if description:
        out["description"] = description
    if parameter.random:
        out["x-random"] = True
    elif parameter.has_default:
        out["default"] = parameter.default
    if parameter.choices is not None:
        out["enum"] = list(parameter.choices)
    for bound, keyword in (
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("multiple_of", "multipleOf"),
    ):
        value = getattr(parameter, bound)
        if value is not None:
            out[keyword] = value
    out["x-sets"] = [str(target) for target in parameter.sets]
    return out
