"""Where everything lives inside a workspace.

```
WORKSPACE/
  comfyui/            the pinned ComfyUI tree           venv/         its Python environment
  models/             model files (or any models_root)  custom_nodes/ custom nodes from the list
  input/  output/     shared by every instance          instances/N/  per-instance temp and user
  logs/               install.log, supervisor.log, instance-N.log
  state/              installed.json, the supervisor's control socket and lock
  comfyfleet.lock     what was installed, to reproduce it
  extra_model_paths.yaml
```
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from comfyfleet.errors import WorkspaceError


class LayoutSettings(Protocol):
    """The settings a workspace's layout is made of (the top-level keys of the settings)."""

    @property
    def workspace(self) -> Path: ...
    @property
    def models_root(self) -> Path | None: ...
    @property
    def input_dir(self) -> Path | None: ...
    @property
    def output_dir(self) -> Path | None: ...
    @property
    def model_folders(self) -> Mapping[str, str]: ...


_RUNTIME_DIRS = ("custom_nodes", "instances", "logs", "state")


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Building one touches nothing; :meth:`prepare` creates folders."""

    root: Path
    models_dir: Path
    input_dir: Path
    output_dir: Path
    model_folders: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Per folder type, a path relative to `models_dir` (the `model_folders` setting)."""

    @classmethod
    def from_settings(cls, settings: LayoutSettings) -> Workspace:
        root = settings.workspace
        return cls(
            root=root,
            models_dir=settings.models_root or root / "models",
            input_dir=settings.input_dir or root / "input",
            output_dir=settings.output_dir or root / "output",
            model_folders=dict(settings.model_folders),
        )

    @property
    def comfyui_dir(self) -> Path:
        return self.root / "comfyui"

    @property
    def venv_dir(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        """The venv's interpreter, which runs ComfyUI and its pip."""
        if sys.platform == "win32":  # pragma: no cover - documented, not tested here
            return self.venv_dir / "Scripts" / "python.exe"
        return self.venv_dir / "bin" / "python"

    @property
    def custom_nodes_dir(self) -> Path:
        return self.root / "custom_nodes"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def lock_file(self) -> Path:
        return self.root / "comfyfleet.lock"

    @property
    def installed_marker(self) -> Path:
        """Written last by a successful install, removed first by every install."""
        return self.state_dir / "installed.json"

    @property
    def extra_model_paths(self) -> Path:
        return self.root / "extra_model_paths.yaml"

    @property
    def install_log(self) -> Path:
        return self.logs_dir / "install.log"

    @property
    def supervisor_log(self) -> Path:
        return self.logs_dir / "supervisor.log"

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "supervisor.sock"

    @property
    def supervisor_lock(self) -> Path:
        return self.state_dir / "supervisor.lock"

    def instance_dir(self, index: int) -> Path:
        return self.root / "instances" / str(index)

    def instance_log(self, index: int) -> Path:
        return self.logs_dir / f"instance-{index}.log"

    @property
    def is_installed(self) -> bool:
        return self.installed_marker.is_file() and self.python.exists()

    def prepare(self) -> None:
        """Create the folders, or fail naming the one that cannot be created or written."""
        _make_writable_dir(self.root, "workspace")
        for name in _RUNTIME_DIRS:
            _make_writable_dir(self.root / name, name)
        for path, what in ((self.input_dir, "input"), (self.output_dir, "output")):
            _make_writable_dir(path, f"{what} folder")
        _make_models_dir(self.models_dir)

    def require_installed(self) -> None:
        if not self.root.is_dir():
            raise WorkspaceError(
                f"workspace {self.root} does not exist", hint="run `comfyfleet install` first"
            )
        if not self.is_installed:
            raise WorkspaceError(
                f"workspace {self.root} is not installed (or its last install failed)",
                hint="run `comfyfleet install`",
            )


def _make_writable_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"cannot create {what} {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise WorkspaceError(f"{what} {path} is not writable", hint="choose another --workspace")


def _make_models_dir(path: Path) -> None:
    """The models root may be a shared, read-only volume: it must exist, not be writable."""
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"models root {path} does not exist and cannot be created") from exc
