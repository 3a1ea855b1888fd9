"""The volumes a workspace runs on, as `comfyfleet doctor` checks them before a start.

The failures that matter in deployments are quiet ones: a models volume that did not mount
leaves an empty folder behind and every job fails with "model not found"; a read-only or full
output volume fails jobs only once they have run. Each is found here in one line:

- the models root exists, and whether it is a volume of its own (a mount point, or another
  device than the workspace); `require_models_mount` makes "not a volume" a failure, for
  deployments that mount it; an empty models folder on the workspace's own disk is a warning;
- the folders written at run time (output, input, per-instance temp, logs, state) are writable,
  by a real write, not by permission bits (which a read-only mount does not show to root);
- the models root is writable too, as model downloads need it (a warning only: a read-only
  shared models volume is a supported setup, without downloads);
- every filesystem among those has at least `min_free_bytes` free.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from comfyfleet.provision._doctor import Check
from comfyfleet.workspace import Workspace

GIB = 1024**3
DEFAULT_MIN_FREE_BYTES = 2 * GIB


def _mount_point(path: Path) -> Path:
    current = path.resolve()
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


def write_error(folder: Path) -> str | None:
    """Why a file cannot be written into `folder`, or None when one can (tried for real)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".comfyfleet-doctor-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _models_checks(ws: Workspace, require_mount: bool) -> list[Check]:
    models = ws.models_dir
    if not models.is_dir():
        return [Check("models root", "fail", f"{models} does not exist (is its volume mounted?)")]
    own_volume = os.path.ismount(models) or (
        ws.root.is_dir() and models.stat().st_dev != ws.root.stat().st_dev
    )
    if own_volume:
        checks = [Check("models root", "ok", f"{models} (a volume of its own)")]
    elif require_mount:
        checks = [
            Check(
                "models root",
                "fail",
                f"{models} is not a mount point: it is on {_mount_point(models)}, with the "
                "workspace (is the models volume mounted?)",
            )
        ]
    elif not any(models.iterdir()):
        checks = [Check("models root", "warn", f"{models} is empty (is its volume mounted?)")]
    else:
        checks = [Check("models root", "ok", f"{models} (on the workspace's disk)")]
    error = write_error(models)
    checks.append(
        Check("models writable", "ok", "yes: missing models can be downloaded")
        if error is None
        else Check("models writable", "warn", f"no ({error}): model downloads will fail")
    )
    return checks


def _runtime_folders(ws: Workspace) -> list[tuple[str, Path]]:
    return [
        ("output", ws.output_dir),
        ("input", ws.input_dir),
        ("instance temp", ws.root / "instances"),
        ("logs", ws.logs_dir),
        ("state", ws.state_dir),
    ]


def _writable_checks(ws: Workspace) -> list[Check]:
    checks = []
    for what, folder in _runtime_folders(ws):
        if not folder.is_dir():
            parent = next((p for p in folder.parents if p.exists()), None)
            error = "nothing above it exists" if parent is None else write_error(parent)
            checks.append(
                Check(what, "warn", f"{folder} does not exist yet (created at start)")
                if error is None
                else Check(what, "fail", f"{folder} does not exist and cannot be created ({error})")
            )
            continue
        error = write_error(folder)
        checks.append(
            Check(what, "ok", f"{folder} is writable")
            if error is None
            else Check(what, "fail", f"{folder} is not writable ({error})")
        )
    return checks


def _free_space_checks(folders: list[tuple[str, Path]], min_free_bytes: int) -> list[Check]:
    """One line per filesystem among `folders` (a workspace usually sits on one or two)."""
    by_mount: dict[Path, list[str]] = {}
    for what, folder in folders:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None:
            by_mount.setdefault(_mount_point(existing), []).append(what)
    checks = []
    for mount, on_it in by_mount.items():
        free = shutil.disk_usage(mount).free
        detail = f"{free / GIB:.1f} GiB free on {mount} ({', '.join(on_it)})"
        if free < min_free_bytes:
            need = f"below the {min_free_bytes / GIB:.1f} GiB asked for"
            checks.append(Check("free space", "fail", f"{detail}: {need}"))
        else:
            checks.append(Check("free space", "ok", detail))
    return checks


def volume_checks(
    ws: Workspace,
    *,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    require_models_mount: bool = False,
) -> list[Check]:
    """The models root, the folders written at run time, and free space, one line each."""
    checks = _models_checks(ws, require_models_mount)
    checks.extend(_writable_checks(ws))
    folders = _runtime_folders(ws)
    if ws.models_dir.is_dir() and write_error(ws.models_dir) is None:
        folders.append(("models", ws.models_dir))
    checks.extend(_free_space_checks(folders, min_free_bytes))
    return checks
