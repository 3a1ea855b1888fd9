"""Where each ComfyUI folder type lives under the models root.

The subfolders come from :data:`comfyfleet.workspace.MODEL_FOLDER_TYPES` (the same table that
writes `extra_model_paths.yaml`, so ComfyUI and comfyfleet look in the same places), with the
settings' `model_folders` overrides. A file is found in any of its type's folders; new files go
into the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from comfyfleet.models._errors import ModelError
from comfyfleet.models._manifest import check_folder_type, check_relative_name, folder_types


class ModelFolders:
    """The folders of every folder type under one models root."""

    def __init__(self, models_root: Path, overrides: Mapping[str, str] | None = None) -> None:
        self.root = models_root
        self._dirs: dict[str, tuple[Path, ...]] = {}
        known = folder_types()
        for folder_type, subfolders in known.items():
            self._dirs[folder_type] = tuple(models_root / sub for sub in subfolders)
        for folder_type, value in (overrides or {}).items():
            if folder_type not in known:
                continue  # the settings loader already rejects unknown types
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if parts:
                self._dirs[folder_type] = tuple(models_root / p for p in parts)

    @classmethod
    def from_settings(cls, settings: Any) -> ModelFolders:
        """From a :class:`comfyfleet.config.Settings` (models_root, model_folders)."""
        from comfyfleet.workspace import Workspace

        workspace = Workspace.from_settings(settings)
        return cls(workspace.models_dir, dict(settings.model_folders))

    @property
    def types(self) -> list[str]:
        return list(self._dirs)

    def dirs(self, folder_type: str) -> tuple[Path, ...]:
        try:
            return self._dirs[check_folder_type(folder_type)]
        except ValueError as exc:
            raise ModelError(str(exc)) from exc

    def primary(self, folder_type: str) -> Path:
        return self.dirs(folder_type)[0]

    def target(self, folder_type: str, filename: str) -> Path:
        """Where a new file of this type and name goes."""
        return self.primary(folder_type).joinpath(*PurePosixPath(_checked(filename)).parts)

    def find(self, folder_type: str, filename: str) -> Path | None:
        """The existing file of this type and name (as ComfyUI would find it), or None."""
        parts = PurePosixPath(_checked(filename)).parts
        for folder in self.dirs(folder_type):
            candidate = folder.joinpath(*parts)
            if candidate.is_file():
                return candidate
        return None


def _checked(filename: str) -> str:
    try:
        return check_relative_name(filename.replace("\\", "/"))
    except ValueError as exc:
        raise ModelError(str(exc), hint="name files relative to their folder type") from exc
