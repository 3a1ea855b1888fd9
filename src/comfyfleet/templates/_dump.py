"""Writing a template file people can read and edit: one line per parameter and per node,
as the shipped templates are written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Strings that look like other things (`"3.seed"`, `"10"`) keep their quotes."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    node = dumper.represent_str(value)
    if node.style is None and _needs_quotes(value):
        node.style = '"'
    return node


def _needs_quotes(value: str) -> bool:
    return "." in value and value.split(".", 1)[0].isdigit()


_Dumper.add_representer(str, _text)


def _flow(value: Any) -> str:
    text = yaml.dump(
        value,
        Dumper=_Dumper,
        default_flow_style=True,
        sort_keys=False,
        width=1_000_000,
        allow_unicode=True,
    ).strip()
    return text.removesuffix("...").strip()


def template_yaml(document: Mapping[str, Any], *, header: str = "") -> str:
    """`document` (a template file's content) as YAML: top-level keys in block style, each
    parameter, model type and node on one line of its own."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in document.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{key}:")
            lines += [f"  {_flow(str(k))}: {_flow(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"
