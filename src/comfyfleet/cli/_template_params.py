"""`-p NAME=VALUE` for `run --template`: each value read as its parameter's type says (the
template's JSON Schema from the server), and a local image file sent as a `data:` URI."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfyfleet.errors import ConfigError

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def parse_params(items: list[str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """The `params` of a template job. A name the template lacks is sent as it is: the server
    answers naming it and listing the known ones."""
    properties = schema.get("properties") or {}
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"-p '{item}' must look like NAME=VALUE (prompt=\"a red fox\")")
        declared = properties.get(name)
        if isinstance(declared, Mapping) and declared.get("x-random") and raw == "random":
            continue  # left out, the server draws a fresh value
        params[name] = _value(name, raw, declared if isinstance(declared, Mapping) else None)
    return params


def _value(name: str, raw: str, declared: Mapping[str, Any] | None) -> Any:
    kind = declared.get("x-type") if declared is not None else None
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        raise ConfigError(
            f"-p {name}={raw}: {name} takes {'an' if kind == 'integer' else 'a'} {kind}"
        ) from None
    if kind == "boolean":
        if raw.lower() not in _TRUE | _FALSE:
            raise ConfigError(f"-p {name}={raw}: {name} takes true or false")
        return raw.lower() in _TRUE
    if kind == "image":
        return _image(raw)
    return raw


def _image(raw: str) -> str:
    """A local file as a `data:` URI; anything else (a URL, `asset:<id>`, base64) as given."""
    path = Path(raw).expanduser()
    if "://" in raw or raw.startswith(("data:", "asset:")) or not path.is_file():
        return raw
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{media};base64,{base64.b64encode(data).decode()}"
