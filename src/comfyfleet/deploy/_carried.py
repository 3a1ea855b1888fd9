"""The settings a container runs with: the user's own, less what must not or cannot travel.

The container targets (compose, Kubernetes) carry the user's settings as a file (mounted, or in a
ConfigMap), so the fleet runs with the limits, policies and stores the user chose. Three kinds of
value stay behind:

- secrets: every `SecretStr`, and the password of any URL. They go into an env file or a
  Kubernetes Secret; what is carried lists the variables that hold them instead;
- paths of this machine (workspace, models root, nodes file, key file, manifests, a SQLite store
  or a `file://` output folder): a container has its own, set by the deployment files;
- values equal to the defaults, which the container knows already.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import SecretStr

from comfyfleet.config import Settings

READY = "/ready"
"""The readiness path that probes and health checks ask without a key."""


@dataclass(frozen=True)
class Carried:
    """The settings to ship into containers, and what was left behind."""

    data: dict[str, Any]
    secret_vars: tuple[str, ...]
    """Environment variables that must hold the secrets the user's settings had."""
    left_behind: tuple[str, ...]
    """Dotted names of machine paths that were not carried."""
    notes: tuple[str, ...]

    def to_yaml(self, header: str) -> str:
        body = yaml.safe_dump(self.data, sort_keys=False) if self.data else "{}\n"
        return header + body


@dataclass
class _Walk:
    secrets: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


_DROP = object()


def carried_settings(settings: Settings) -> Carried:
    """The user's settings as containers get them (see the module's docstring)."""
    walk = _Walk()
    dumped = settings.model_dump(mode="python", exclude_defaults=True)
    data = _clean(dumped, (), walk)
    carried: dict[str, Any] = data if isinstance(data, dict) else {}
    notes: list[str] = []
    auth = settings.auth
    if auth.enabled and READY not in auth.public_paths:
        carried.setdefault("auth", {})["public_paths"] = [*auth.public_paths, READY]
        notes.append(f"auth is on: {READY} is added to auth.public_paths so probes can ask it")
    machine_paths = [name for name in walk.paths if name != "workspace"]  # always replaced
    if machine_paths:
        notes.append(
            "paths of this machine stay behind (the containers use their volumes): "
            + ", ".join(machine_paths)
        )
    return Carried(carried, tuple(dict.fromkeys(walk.secrets)), tuple(walk.paths), tuple(notes))


def _clean(value: Any, where: tuple[str, ...], walk: _Walk) -> Any:
    if isinstance(value, SecretStr):
        walk.secrets.append(env_name(where))
        return _DROP
    if isinstance(value, PurePath):
        walk.paths.append(".".join(where))
        return _DROP
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            cleaned = _clean(item, (*where, str(key)), walk)
            if cleaned is not _DROP:
                out[key] = cleaned
        return out if out else _DROP
    if isinstance(value, list | tuple):
        items = [_clean(item, where, walk) for item in value]
        kept = [item for item in items if item is not _DROP]
        return kept if kept or not value else _DROP
    if isinstance(value, str):
        return _clean_text(value, where, walk)
    return value


def _clean_text(value: str, where: tuple[str, ...], walk: _Walk) -> Any:
    lowered = value.lower()
    if lowered.startswith("sqlite:///") or lowered.startswith("file:///"):
        walk.paths.append(".".join(where))  # a database file or output folder of this machine
        return _DROP
    without, had_password = strip_password(value)
    if had_password:
        is_store = where == ("serve", "store")
        walk.secrets.append("PGPASSWORD" if is_store else env_name(where))
    return without


def strip_password(url: str) -> tuple[str, bool]:
    """`url` without the password of its user part, and whether it had one."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url, False
    if password is None:
        return url, False
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}@{host}" if name else host)), True


def env_name(where: tuple[str, ...]) -> str:
    """The environment variable of a setting: `COMFYFLEET_` + its path joined with `__`."""
    return "COMFYFLEET_" + "__".join(part.upper() for part in where)
