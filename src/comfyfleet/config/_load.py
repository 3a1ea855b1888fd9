"""Building :class:`Settings` from flags, environment and the settings file, in that order."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from comfyfleet.config._settings import Settings
from comfyfleet.errors import ConfigError

CONFIG_FILE_NAME = "comfyfleet.yaml"
_file_data: ContextVar[dict[str, Any]] = ContextVar("_file_data")


class _FileSource(PydanticBaseSettingsSource):
    """The settings file's values, placed below the environment in precedence."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _file_data.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get({}))


class _LoadedSettings(Settings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


def find_config_file(explicit: Path | None, workspace: Path | None) -> Path | None:
    """The settings file to read: `--config`, then `COMFYFLEET_CONFIG`, then
    `./comfyfleet.yaml`, then `WORKSPACE/comfyfleet.yaml`; None when there is none."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"settings file {explicit} does not exist")
        return explicit
    from_env = os.environ.get("COMFYFLEET_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"settings file {path} (from COMFYFLEET_CONFIG) does not exist")
        return path
    default_ws = workspace or Path("comfyfleet-workspace")
    for candidate in (Path.cwd() / CONFIG_FILE_NAME, default_ws / CONFIG_FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} must hold a mapping at the top")
    return data


def _drop_unset(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Flags the user did not give arrive as None; they must not hide env or file values."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            nested = _drop_unset(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"setting '{where}': {first['msg']}"


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, config_file: Path | None = None
) -> Settings:
    """Build the settings once. `overrides` are the command-line flags (None means not given)."""
    flags = _drop_unset(overrides or {})
    workspace_hint = flags.get("workspace") or os.environ.get("COMFYFLEET_WORKSPACE")
    path = find_config_file(config_file, Path(workspace_hint) if workspace_hint else None)
    token = _file_data.set(_read_file(path) if path else {})
    try:
        settings: Settings = _LoadedSettings(**flags)
    except ValidationError as exc:
        source = f" (file {path})" if path else ""
        raise ConfigError(_describe(exc) + source) from exc
    finally:
        _file_data.reset(token)
    return _absolute(settings)


def _absolute(settings: Settings) -> Settings:
    """Relative paths are taken from the current directory, once, so later `chdir`s are harmless."""
    updates: dict[str, Any] = {"workspace": settings.workspace.expanduser().absolute()}
    for name in ("models_root", "input_dir", "output_dir"):
        value = getattr(settings, name)
        if value is not None:
            updates[name] = value.expanduser().absolute()
    install = settings.install
    if install.nodes_file is not None:
        nodes = install.nodes_file.expanduser().absolute()
        updates["install"] = install.model_copy(update={"nodes_file": nodes})
    fleet = settings.fleet
    if fleet.pre_start_hook is not None:
        hook = fleet.pre_start_hook.expanduser().absolute()
        updates["fleet"] = fleet.model_copy(update={"pre_start_hook": hook})
    if settings.auth.keys_file is not None:
        keys_file = settings.auth.keys_file.expanduser().absolute()
        updates["auth"] = settings.auth.model_copy(update={"keys_file": keys_file})
    return Settings.model_construct(**{**dict(settings), **updates})
