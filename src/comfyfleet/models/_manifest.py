"""Presets and manifests: YAML files that name model files, where they come from, and their
checksums. Everything is checked when the file is loaded, so a bad entry fails before any
download starts, naming the file and the entry.

```yaml
presets:
  sd15:
    description: Stable Diffusion 1.5
    files:
      - source: hf://stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors
        type: checkpoints            # a ComfyUI folder type
        filename: v1-5-pruned-emaonly.safetensors
        size: 4265146304             # optional, recommended
        sha256: 6ce0161689b3...      # optional, recommended (`comfyfleet models hash` fills it)
        # git_blob: 5915a429...      # a file kept in plain git: its blob id (see `_expected`)
models:                              # files known without a preset (fetch-before-run)
  - {source: ..., type: loras, filename: ...}
```
The presets shipped in the package are always loaded first; a later file's preset of the same
name replaces the earlier one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from comfyfleet.models._errors import ManifestError, PresetNotFound
from comfyfleet.models._sources import check_source

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_relative_name(name: str, what: str = "filename") -> str:
    """A file name relative to a folder type: no `..`, not absolute, POSIX separators."""
    path = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or ".." in path.parts:
        raise ValueError(f"{what} {name!r} must be a relative path without '..'")
    if any(part in ("", ".") for part in name.split("/")):
        raise ValueError(f"{what} {name!r} has an empty or '.' part")
    return name


def folder_types() -> dict[str, tuple[str, ...]]:
    """ComfyUI's folder types (imported late: `config` imports this package's settings, and
    `workspace` imports `config`)."""
    from comfyfleet.workspace import MODEL_FOLDER_TYPES

    return MODEL_FOLDER_TYPES


def check_folder_type(value: str) -> str:
    if value not in folder_types():
        known = ", ".join(sorted(folder_types()))
        raise ValueError(f"unknown folder type {value!r} (known: {known})")
    return value


class ModelFile(BaseModel):
    """One file of a preset or manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    type: str
    filename: str
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = None
    git_blob: str | None = None
    """For a file kept in plain git (no sha256 published): its blob id in the pinned commit."""

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        try:
            return check_source(value)
        except ManifestError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return check_folder_type(value)

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        return check_relative_name(value)

    @field_validator("sha256", "git_blob")
    @classmethod
    def _hex_digest(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Lowercased; 64 hex digits for a sha256, 40 for a git blob id."""
        if value is None:
            return None
        value = value.strip().lower()
        digits = 64 if info.field_name == "sha256" else 40
        if not re.fullmatch(f"[0-9a-f]{{{digits}}}", value):
            what = "" if digits == 64 else " (a git object id)"
            raise ValueError(f"{info.field_name} must be {digits} hexadecimal digits{what}")
        return value

    @property
    def key(self) -> tuple[str, str]:
        return self.type, self.filename

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class _PresetBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    files: tuple[ModelFile, ...] = Field(min_length=1)


class _ManifestBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    presets: dict[str, _PresetBody] = Field(default_factory=dict)
    models: tuple[ModelFile, ...] = ()

    @field_validator("presets")
    @classmethod
    def _names(cls, value: dict[str, _PresetBody]) -> dict[str, _PresetBody]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"preset name {name!r}: use letters, digits, '.', '_', '-'")
        return value


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    files: tuple[ModelFile, ...]
    origin: str
    """The file it was loaded from (`builtin:NAME.yaml` for the shipped ones)."""

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "size": self.size,
            "origin": self.origin,
            "files": [f.to_dict() for f in self.files],
        }


@dataclass(frozen=True)
class Manifest:
    origin: str
    presets: tuple[Preset, ...]
    models: tuple[ModelFile, ...]


def _where(error: dict[str, Any]) -> str:
    parts: list[str] = []
    for loc in error.get("loc", ()):
        if isinstance(loc, int):
            parts.append(f"[{loc}]")
        else:
            parts.append(("." if parts else "") + str(loc))
    return "".join(parts) or "(top)"


def parse_manifest(text: str, origin: str) -> Manifest:
    """Check and parse a manifest's YAML text; `origin` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{origin}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: the top level must be a mapping (presets:, models:)")
    try:
        body = _ManifestBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ManifestError(
            f"{origin}: {_where(dict(first))}: {message}{more}",
            hint="fix the manifest; folder types are ComfyUI's (checkpoints, loras, vae, ...)",
        ) from exc
    presets = tuple(
        Preset(name, preset.description, preset.files, origin)
        for name, preset in body.presets.items()
    )
    return Manifest(origin, presets, body.models)


def load_manifest(path: Path) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    return parse_manifest(text, str(path))


def shipped_manifests() -> list[Manifest]:
    """The presets that ship inside the package."""
    folder = resources.files("comfyfleet.models").joinpath("presets")
    found = sorted((e for e in folder.iterdir() if e.name.endswith(".yaml")), key=lambda e: e.name)
    return [
        parse_manifest(entry.read_text(encoding="utf-8"), f"builtin:{entry.name}")
        for entry in found
    ]


@dataclass
class Catalog:
    """Every preset and every known file, from the shipped presets and the manifests."""

    presets: dict[str, Preset] = field(default_factory=dict)
    files: dict[tuple[str, str], ModelFile] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: Iterable[Path] = (), *, shipped: bool = True) -> Catalog:
        manifests = shipped_manifests() if shipped else []
        manifests += [load_manifest(Path(p)) for p in paths]
        return cls.from_manifests(manifests)

    @classmethod
    def from_manifests(cls, manifests: Iterable[Manifest]) -> Catalog:
        catalog = cls()
        for manifest in manifests:
            for preset in manifest.presets:
                catalog.presets[preset.name] = preset
                for file in preset.files:
                    catalog.files[file.key] = file
            for file in manifest.models:
                catalog.files[file.key] = file
        return catalog

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets)) or "none"
            raise PresetNotFound(
                f"no preset named '{name}' (known: {known})",
                hint="add it to a manifest listed in models.manifests",
            ) from None

    def find(self, folder_type: str, filename: str) -> ModelFile | None:
        return self.files.get((folder_type, filename))

    def by_source(self, source: str) -> ModelFile | None:
        for file in self.files.values():
            if file.source == source:
                return file
        return None
