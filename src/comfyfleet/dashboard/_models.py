"""The Models page's view model: `/v1/models` by folder type, `/v1/presets` with what each
file's state is, and the disks the models live on (from the agents' machine reports)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.dashboard._format import size
from comfyfleet.dashboard._overview import Disk, disk_view

FILE_STATES = {
    "ok": ("present", "ok"),
    "unverified": ("present (not hashed yet)", "ok"),
    "missing": ("missing", "warn"),
    "wrong_size": ("wrong size", "bad"),
    "wrong_hash": ("wrong sha256", "bad"),
}
COMMON_TYPES = (
    "checkpoints",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "controlnet",
    "upscale_models",
    "embeddings",
    "clip_vision",
    "vae_approx",
)


@dataclass(frozen=True)
class ModelFile:
    name: str
    size: str
    sha256: str


@dataclass(frozen=True)
class ModelGroup:
    folder_type: str
    total: str
    files: list[ModelFile] = field(default_factory=list)


@dataclass(frozen=True)
class PresetFile:
    folder_type: str
    filename: str
    size: str
    state: str
    tone: str


@dataclass(frozen=True)
class PresetRow:
    name: str
    description: str
    size: str
    state: str
    tone: str
    complete: bool
    files: list[PresetFile] = field(default_factory=list)


def model_groups(models: list[dict[str, Any]]) -> list[ModelGroup]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in models:
        grouped[str(entry.get("folder_type"))].append(entry)
    groups = []
    for folder_type in sorted(grouped):
        entries = sorted(grouped[folder_type], key=lambda e: str(e.get("name")).lower())
        groups.append(
            ModelGroup(
                folder_type=folder_type,
                total=size(sum(int(e.get("size") or 0) for e in entries)),
                files=[
                    ModelFile(
                        name=str(e.get("name")),
                        size=size(e.get("size")),
                        sha256=str(e.get("sha256") or "")[:12],
                    )
                    for e in entries
                ],
            )
        )
    return groups


def preset_rows(presets: list[dict[str, Any]]) -> list[PresetRow]:
    rows = []
    for preset in presets:
        files = []
        for file in preset.get("files") or []:
            state, tone = FILE_STATES.get(str(file.get("state")), ("unknown", "warn"))
            files.append(
                PresetFile(
                    folder_type=str(file.get("type")),
                    filename=str(file.get("filename")),
                    size=size(file.get("size")),
                    state=state,
                    tone=tone,
                )
            )
        bad = sum(1 for f in files if f.tone == "bad")
        missing = sum(1 for f in files if f.tone == "warn")
        if preset.get("complete"):
            state, tone = "installed", "ok"
        elif bad:
            state, tone = f"{bad} of {len(files)} wrong", "bad"
        else:
            state, tone = f"{missing} of {len(files)} missing", "warn"
        rows.append(
            PresetRow(
                name=str(preset.get("name")),
                description=str(preset.get("description") or ""),
                size=size(preset.get("size")),
                state=state,
                tone=tone,
                complete=bool(preset.get("complete")),
                files=files,
            )
        )
    return rows


def model_disks(fleet: dict[str, Any]) -> list[tuple[str, Disk]]:
    """(host, disk) of every file system that holds a models folder."""
    found = []
    for agent in fleet.get("agents") or []:
        for disk in (agent.get("machine") or {}).get("disks") or []:
            if "models" in (disk.get("folders") or []):
                found.append((str(agent.get("host")), disk_view(disk)))
    return found


def registry_models(fleet: dict[str, Any]) -> list[ModelGroup]:
    """Model files as the agents registered them (names only): what a gateway without an agent
    of its own can show."""
    names: dict[str, set[str]] = defaultdict(set)
    for instance in fleet.get("instances") or []:
        for folder_type, files in (instance.get("models") or {}).items():
            names[str(folder_type)].update(str(f) for f in files)
    return [
        ModelGroup(t, "—", [ModelFile(n, "—", "") for n in sorted(names[t])]) for t in sorted(names)
    ]
