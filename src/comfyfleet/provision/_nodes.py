"""Custom nodes from a YAML list: each from git (URL + ref) or a local folder, with its
requirements. Only what the list names ends up in `custom_nodes/`.

```yaml
nodes:
  - git: https://github.com/org/some-nodes
    ref: v1.4.0            # tag, branch or commit; the lock file records the commit
  - path: ./my-nodes       # relative to the list file
    name: my-nodes         # optional; defaults to the repository or folder name
    requirements: requirements-no-cupy.txt   # optional; default requirements.txt (if present)
```

The same format is used by the node sets shipped with comfyfleet (`_node_sets`) and by the
workspace's own list that `comfyfleet nodes add|remove` edits.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
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
    requirements: str | None = None
    """The requirements file inside the node, when it is not `requirements.txt`."""

    def entry(self) -> dict[str, str]:
        """The node as a list entry (what `load_nodes_file` reads back as this spec)."""
        out = {self.kind: self.location}
        if self.ref is not None:
            out["ref"] = self.ref
        default = self.location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        if self.name != default:
            out["name"] = self.name
        if self.requirements is not None:
            out["requirements"] = self.requirements
        return out


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
    unknown = set(entry) - {"git", "path", "ref", "name", "requirements"}
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
    requirements = entry.get("requirements")
    if requirements is not None:
        parts = PurePosixPath(str(requirements)).parts
        if not parts or str(requirements).startswith("/") or ".." in parts:
            raise CustomNodeError(
                f"{where}: requirements '{requirements}' must be a file inside the node"
            )
        requirements = str(requirements)
    return NodeSpec(name, kind, location, None if ref is None else str(ref), requirements)


def load_nodes_file(path: Path) -> list[NodeSpec]:
    """Read and check a nodes list; every mistake names the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CustomNodeError(f"cannot read nodes list {path}: {exc}") from exc
    return parse_nodes(data, path)


def parse_nodes(data: Any, path: Path) -> list[NodeSpec]:
    """Check the parsed YAML of the nodes list `path` (relative paths are taken from its
    folder)."""
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


def park(entry: Path, parking: Path) -> Path:
    """Move `entry` out of `custom_nodes/` into `parking`, under a dated name; returns where."""
    parking.mkdir(parents=True, exist_ok=True)
    target = parking / f"{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    entry.rename(target)
    return target


def _clear_unlisted(custom_nodes: Path, keep: set[str], parking: Path, reporter: Reporter) -> None:
    """Nothing the list does not name may stay where ComfyUI loads nodes from."""
    for entry in sorted(custom_nodes.iterdir()):
        if entry.name in keep or entry.name == "__pycache__":
            continue
        if entry.is_dir() and _read_marker(entry) is not None:
            shutil.rmtree(entry)
            reporter.info(f"removed custom node '{entry.name}' (no longer in the list)")
            continue
        target = park(entry, parking)
        reporter.warn(
            f"moved '{entry.name}' out of custom_nodes/ to {target}: it is not in the nodes list"
        )


def installed_node(folder: Path) -> InstalledNode | None:
    """What comfyfleet installed in `folder` (its marker), None for a folder it did not."""
    marker = _read_marker(folder)
    if marker is None:
        return None
    try:
        return InstalledNode(**marker)
    except TypeError:
        return None


def install_node(
    spec: NodeSpec,
    custom_nodes: Path,
    *,
    pip: Pip,
    constraints: Mapping[str, str],
    log: InstallLog,
    reporter: Reporter,
    locked_commit: str | None = None,
) -> InstalledNode:
    """Place one node in `custom_nodes/` (unless it is there already) and install its
    requirements under `constraints`."""
    node = _place(spec, custom_nodes / spec.name, locked_commit, log, reporter)
    requirements = custom_nodes / spec.name / (spec.requirements or "requirements.txt")
    if spec.requirements is not None and not requirements.is_file():
        raise CustomNodeError(
            f"custom node '{spec.name}': it has no requirements file '{spec.requirements}'"
        )
    if requirements.is_file():
        try:
            pip.install(
                requirement_files=[requirements],
                constraints=constraints,
                what=f"requirements of custom node '{spec.name}'",
            )
        except CommandFailed as exc:
            raise CustomNodeError(exc.message, hint=exc.hint) from exc
    return node


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
    return [
        install_node(
            spec,
            custom_nodes,
            pip=pip,
            constraints=constraints,
            log=log,
            reporter=reporter,
            locked_commit=(locked_commits or {}).get(spec.name),
        )
        for spec in specs
    ]
