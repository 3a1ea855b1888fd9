"""Custom nodes from a YAML list: each from git (URL + ref) or a local folder, with its
requirements. Only what the list names ends up in `custom_nodes/`.

```yaml
nodes:
  - git: https://github.com/org/some-nodes
    ref: v1.4.0            # tag, branch or commit; the lock file records the commit
  - path: ./my-nodes       # relative to the list file
    name: my-nodes         # optional; defaults to the repository or folder name
```
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from comfyfleet.errors import CustomNodeError
from comfyfleet.provision._git import fetch_ref
from comfyfleet.provision._report import InstallLog, Reporter
from comfyfleet.provision._run import CommandFailed
from comfyfleet.provision._tree import (
    copy_tree,
    replace_dir,
    scratch_dir,
    tree_sha256,
    tree_signature,
)
from comfyfleet.provision._venv import Pip

MARKER = ".comfyfleet-node.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: str  # "git" | "path"
    location: str
    ref: str | None = None


@dataclass(frozen=True)
class InstalledNode:
    """One custom node as installed; the lock file's entry."""

    name: str
    source: str
    ref: str | None
    commit: str | None
    sha256: str
    signature: str | None = None


def _spec_from(entry: Any, base: Path, where: str) -> NodeSpec:
    if not isinstance(entry, dict):
        raise CustomNodeError(f"{where}: each entry needs 'git:' or 'path:'")
    unknown = set(entry) - {"git", "path", "ref", "name"}
    if unknown:
        raise CustomNodeError(f"{where}: unknown keys {sorted(unknown)}")
    if ("git" in entry) == ("path" in entry):
        raise CustomNodeError(f"{where}: give exactly one of 'git:' and 'path:'")
    if "git" in entry:
        location = str(entry["git"])
        default = location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        kind, ref = "git", entry.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise CustomNodeError(f"{where}: ref {ref!r} must be a string (quote it in YAML)")
    else:
        path = Path(str(entry["path"])).expanduser()
        location = str(path if path.is_absolute() else (base / path).resolve())
        default = Path(location).name
        kind, ref = "path", None
    name = str(entry.get("name") or default)
    if not _NAME.match(name):
        raise CustomNodeError(f"{where}: '{name}' is not a usable folder name")
    return NodeSpec(name, kind, location, None if ref is None else str(ref))


def load_nodes_file(path: Path) -> list[NodeSpec]:
    """Read and check a nodes list; every mistake names the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CustomNodeError(f"cannot read nodes list {path}: {exc}") from exc
    if isinstance(data, dict):
        if set(data) != {"nodes"}:
            raise CustomNodeError(
                f"nodes list {path}: expected one top-level key 'nodes:', found {sorted(data)}"
            )
        entries = data["nodes"]
    else:
        entries = data
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise CustomNodeError(f"nodes list {path}: expected a list under 'nodes:'")
    specs = [_spec_from(e, path.parent, f"{path} entry {i + 1}") for i, e in enumerate(entries)]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise CustomNodeError(f"nodes list {path}: '{spec.name}' is listed twice")
        seen.add(spec.name)
    return specs


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fetch_git(
    spec: NodeSpec, work: Path, commit: str | None, log: InstallLog, reporter: Reporter
) -> str:
    what = f"custom node '{spec.name}' ({spec.location}@{spec.ref or 'HEAD'})"
    try:
        return fetch_ref(
            spec.location, commit or spec.ref or "HEAD", work, log=log, reporter=reporter, what=what
        )
    except CommandFailed as exc:
        raise CustomNodeError(exc.message, hint="check its URL and ref in the nodes list") from exc


def _place(
    spec: NodeSpec, dest: Path, locked_commit: str | None, log: InstallLog, reporter: Reporter
) -> InstalledNode:
    signature = None
    if spec.kind == "path":
        source = Path(spec.location)
        if not source.is_dir():
            raise CustomNodeError(f"custom node '{spec.name}': folder {source} does not exist")
        signature = tree_signature(source)
    marker = _read_marker(dest)
    same = (
        marker is not None
        and marker.get("source") == spec.location
        and (marker.get("ref") == spec.ref and marker.get("signature") == signature)
        and (locked_commit is None or marker.get("commit") == locked_commit)
    )
    if same and marker is not None:
        return InstalledNode(**marker)
    work = scratch_dir(dest)
    try:
        commit = None
        if spec.kind == "git":
            commit = _fetch_git(spec, work, locked_commit, log, reporter)
        else:
            work.rmdir()
            copy_tree(Path(spec.location), work)
        node = InstalledNode(
            spec.name, spec.location, spec.ref, commit, tree_sha256(work), signature
        )
        (work / MARKER).write_text(json.dumps(asdict(node), indent=2), encoding="utf-8")
        replace_dir(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return node


def _clear_unlisted(custom_nodes: Path, keep: set[str], parking: Path, reporter: Reporter) -> None:
    """Nothing the list does not name may stay where ComfyUI loads nodes from."""
    for entry in sorted(custom_nodes.iterdir()):
        if entry.name in keep or entry.name == "__pycache__":
            continue
        if entry.is_dir() and _read_marker(entry) is not None:
            shutil.rmtree(entry)
            reporter.info(f"removed custom node '{entry.name}' (no longer in the list)")
            continue
        parking.mkdir(parents=True, exist_ok=True)
        target = parking / f"{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        entry.rename(target)
        reporter.warn(
            f"moved '{entry.name}' out of custom_nodes/ to {target}: it is not in the nodes list"
        )


def install_nodes(
    specs: list[NodeSpec],
    custom_nodes: Path,
    *,
    pip: Pip,
    constraints: Mapping[str, str],
    parking: Path,
    log: InstallLog,
    reporter: Reporter,
    locked_commits: Mapping[str, str | None] | None = None,
) -> list[InstalledNode]:
    """Install every listed node and its requirements; remove what the list does not name."""
    custom_nodes.mkdir(parents=True, exist_ok=True)
    _clear_unlisted(custom_nodes, {spec.name for spec in specs}, parking, reporter)
    installed: list[InstalledNode] = []
    for spec in specs:
        locked = (locked_commits or {}).get(spec.name)
        node = _place(spec, custom_nodes / spec.name, locked, log, reporter)
        requirements = custom_nodes / spec.name / "requirements.txt"
        if requirements.is_file():
            try:
                pip.install(
                    requirement_files=[requirements],
                    constraints=constraints,
                    what=f"requirements of custom node '{spec.name}'",
                )
            except CommandFailed as exc:
                raise CustomNodeError(exc.message, hint=exc.hint) from exc
        installed.append(node)
    return installed
