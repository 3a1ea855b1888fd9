"""`comfyfleet.lock`: what an install put into the workspace, precisely enough to reproduce it.

It records the ComfyUI source and the hash of its tree, the Python version, the torch build, every
package in the venv with its version, and every custom node with its commit (or content hash). It
is JSON with sorted keys so that diffs between two installs read well in review.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from comfyfleet.errors import LockError

LOCK_VERSION = 1


@dataclass(frozen=True)
class ComfyUILock:
    source: str
    version: str
    sha256: str
    commit: str | None = None


@dataclass(frozen=True)
class TorchLock:
    choice: str
    variant: str
    version: str
    index_url: str | None
    system_site_packages: bool = False


@dataclass(frozen=True)
class NodeLock:
    name: str
    source: str
    ref: str | None
    commit: str | None
    sha256: str


@dataclass(frozen=True)
class Lock:
    comfyui: ComfyUILock
    python: str
    torch: TorchLock
    packages: dict[str, str]
    custom_nodes: tuple[NodeLock, ...] = ()
    repairs: tuple[str, ...] = ()
    lock_version: int = LOCK_VERSION
    generated_by: str = field(default="comfyfleet", compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data["custom_nodes"] = [asdict(node) for node in self.custom_nodes]
        data["repairs"] = list(self.repairs)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Lock:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise LockError(f"{where} is not a valid lock file: expected a JSON object")
            version = data.get("lock_version")
            if version != LOCK_VERSION:
                raise LockError(f"{where}: lock version {version} is not supported")
            return cls(
                comfyui=ComfyUILock(**data["comfyui"]),
                python=str(data["python"]),
                torch=TorchLock(**data["torch"]),
                packages={str(k): str(v) for k, v in data["packages"].items()},
                custom_nodes=tuple(NodeLock(**node) for node in data.get("custom_nodes", [])),
                repairs=tuple(data.get("repairs", [])),
                generated_by=str(data.get("generated_by", "comfyfleet")),
            )
        except LockError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LockError(f"{where} is not a valid lock file: {exc}") from exc


def read_lock(path: Path) -> Lock:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LockError(
            f"no lock file at {path}", hint="run `comfyfleet install` once without --locked"
        ) from exc
    return Lock.from_json(text, str(path))


def write_lock(path: Path, lock: Lock) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(lock.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def _diff_mapping(label: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"{label} {name}: added {after}")
        elif after is None:
            lines.append(f"{label} {name}: removed (was {before})")
        else:
            lines.append(f"{label} {name}: {before} -> {after}")
    return lines


def diff_locks(old: Lock, new: Lock) -> list[str]:
    """Human-readable differences, one per line; empty when the two describe the same install."""
    lines: list[str] = []
    if old.comfyui != new.comfyui:
        lines.append(
            f"comfyui: {old.comfyui.source} {old.comfyui.version} ({old.comfyui.sha256[:12]}) -> "
            f"{new.comfyui.source} {new.comfyui.version} ({new.comfyui.sha256[:12]})"
        )
    if old.python != new.python:
        lines.append(f"python: {old.python} -> {new.python}")
    if old.torch != new.torch:
        lines.append(
            f"torch: {old.torch.variant} {old.torch.version} -> "
            f"{new.torch.variant} {new.torch.version}"
        )
    lines += _diff_mapping("package", old.packages, new.packages)
    old_nodes = {n.name: f"{n.commit or n.sha256[:12]}" for n in old.custom_nodes}
    new_nodes = {n.name: f"{n.commit or n.sha256[:12]}" for n in new.custom_nodes}
    lines += _diff_mapping("custom node", old_nodes, new_nodes)
    if old.repairs != new.repairs:
        lines.append(f"repairs: {list(old.repairs)} -> {list(new.repairs)}")
    return lines
