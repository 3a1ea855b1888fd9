"""The workspace's own nodes list: the file `install` reads and `comfyfleet nodes add|remove`
edit.

It is `install.nodes_file` when the settings name one, else `WORKSPACE/nodes.yaml`, which
`install` also reads when it exists, so a node added by `nodes add` stays through the next
install. Editing rewrites the file from its entries (YAML comments in it are not kept).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from comfyfleet.errors import CustomNodeError
from comfyfleet.provision._nodes import NodeSpec, load_nodes_file
from comfyfleet.workspace import Workspace

DEFAULT_NAME = "nodes.yaml"

_HEADER = (
    "# Custom nodes of this workspace; `comfyfleet install` installs exactly these (plus any\n"
    "# node sets it is given). `comfyfleet nodes add|remove` rewrite this file.\n"
)


def list_path(nodes_file: Path | None, ws: Workspace) -> Path:
    """Where the workspace's list is (whether or not it exists yet)."""
    return nodes_file if nodes_file is not None else ws.root / DEFAULT_NAME


def own_nodes_file(nodes_file: Path | None, ws: Workspace) -> Path | None:
    """The list an install reads: the configured one (which must exist), else the workspace's
    default list when there is one."""
    if nodes_file is not None:
        return nodes_file
    default = ws.root / DEFAULT_NAME
    return default if default.is_file() else None


def read_list(path: Path) -> list[NodeSpec]:
    """The list's entries; a list that does not exist yet is empty."""
    return load_nodes_file(path) if path.is_file() else []


def _entry(spec: NodeSpec, base: Path) -> dict[str, str]:
    entry = spec.entry()
    if spec.kind == "path":  # written back relative to the list, as users write them
        location = Path(spec.location)
        if location.is_relative_to(base):
            entry["path"] = "./" + location.relative_to(base).as_posix()
    return entry


def write_list(path: Path, specs: list[NodeSpec]) -> None:
    """Write `specs` as the list at `path` (atomically: a reader never sees half a file)."""
    body = yaml.safe_dump(
        {"nodes": [_entry(spec, path.parent.resolve()) for spec in specs]},
        sort_keys=False,
        default_flow_style=False,
    )
    scratch = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(_HEADER + body, encoding="utf-8")
        scratch.replace(path)
    except OSError as exc:
        raise CustomNodeError(f"cannot write the nodes list {path}: {exc.strerror or exc}") from exc
