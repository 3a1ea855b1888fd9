"""Reading template files (YAML or JSON, one template per file) and the shipped ones."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from comfyfleet.templates._errors import TemplateFileError
from comfyfleet.templates._model import Template
from comfyfleet.templates._parse import parse_template

SUFFIXES = (".yaml", ".yml", ".json")
"""The files a templates folder is read for; anything else there is left alone."""
SHIPPED_PREFIX = "builtin:"


def load_template(path: Path) -> Template:
    """The template in `path`, or `TemplateFileError` naming the file and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateFileError(str(path), None, f"cannot be read: {exc}") from exc
    return parse_text(text, file=str(path), suffix=path.suffix, default_name=path.stem)


def parse_text(text: str, *, file: str, suffix: str, default_name: str) -> Template:
    """A template from a file's text: JSON for `.json`, YAML otherwise."""
    return parse_template(_document(text, file, suffix), file=file, default_name=default_name)


def _document(text: str, file: str, suffix: str) -> Any:
    if suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise TemplateFileError(file, None, f"not valid JSON: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateFileError(file, None, f"not valid YAML: {where}{problem}") from exc


def shipped_templates() -> list[Template]:
    """The templates that ship inside the package (`builtin:NAME.yaml`). A broken one is a
    bug of the release, so it raises instead of being listed."""
    folder = resources.files("comfyfleet.templates").joinpath("builtin")
    entries = sorted(
        (e for e in folder.iterdir() if e.name.endswith(SUFFIXES)), key=lambda e: e.name
    )
    return [
        parse_text(
            entry.read_text(encoding="utf-8"),
            file=SHIPPED_PREFIX + entry.name,
            suffix=Path(entry.name).suffix,
            default_name=Path(entry.name).stem,
        )
        for entry in entries
    ]
