"""The host targets: systemd units (serve, gateway, agent) and a supervisord program (serve).

They run the `comfyfleet` command installed on the machine, on the user's workspace and settings
file, as a service user. Secrets come from `/etc/comfyfleet/comfyfleet.env`, which the files
name but never fill.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

from comfyfleet.deploy._carried import carried_settings
from comfyfleet.deploy._compose import env_example
from comfyfleet.deploy._errors import DeployError
from comfyfleet.deploy._model import Deployment, Rendered
from comfyfleet.deploy._templates import header, render_template
from comfyfleet.workspace import Workspace

ENV_FILE = "/etc/comfyfleet/comfyfleet.env"
_HOMES = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))
_STATE_ROOT = PurePosixPath("/var/lib")

_ROLES = {
    "comfyfleet.service": (
        "serve",
        "comfyfleet: ComfyUI as a service (gateway and this machine's instances)",
        "`comfyfleet serve`: the job API and one ComfyUI per GPU of this machine, on one store.",
    ),
    "comfyfleet-gateway.service": (
        "gateway",
        "comfyfleet gateway: the job API in front of the fleet",
        "`comfyfleet gateway`: the job API alone (stateless), in front of the agents that "
        "share its store\n# (serve.store: postgresql://USER@HOST/DB in the settings, or "
        "COMFYFLEET_SERVE__STORE).",
    ),
    "comfyfleet-agent.service": (
        "agent",
        "comfyfleet agent: this machine's ComfyUI instances",
        "`comfyfleet agent`: one ComfyUI per GPU of this machine, taking jobs from the store\n"
        "# it shares with the gateways (serve.store: postgresql://USER@HOST/DB in the settings, "
        "or\n# COMFYFLEET_SERVE__STORE; outputs to a shared storage.url such as s3://...).",
    ),
}


def systemd_files(dep: Deployment) -> Rendered:
    ws = Workspace.from_settings(dep.settings)
    files = {unit: _unit(dep, ws, unit, *role) for unit, role in _ROLES.items()}
    files["comfyfleet.env.example"] = env_example(carried_settings(dep.settings), "systemd")
    return Rendered(files)


def supervisord_files(dep: Deployment) -> Rendered:
    ws = Workspace.from_settings(dep.settings)
    script = (
        f"set -a; if [ -r {ENV_FILE} ]; then . {ENV_FILE}; fi; "
        f"exec {shlex.quote(str(dep.executable))} serve"
    )
    environment = ",".join(f'{name}="{_supervisor_value(value)}"' for name, value in _env(dep))
    text = render_template(
        "supervisord.conf",
        header_semicolon=header("supervisord", ";"),
        command=_supervisor_value("/bin/sh -c " + shlex.quote(script)),
        workspace=_supervisor_value(str(ws.root)),
        user=dep.service_user,
        environment=environment,
        stop_timeout=_stop_timeout(dep),
        log_file=_supervisor_value(str(ws.logs_dir / "serve.log")),
    )
    files = {
        "comfyfleet.conf": text,
        "comfyfleet.env.example": env_example(carried_settings(dep.settings), "supervisord"),
    }
    return Rendered(files)


def _unit(
    dep: Deployment, ws: Workspace, unit: str, role: str, description: str, summary: str
) -> str:
    root = PurePosixPath(ws.root)
    state_directory = ""
    writable = [ws.root, ws.models_dir, ws.input_dir, ws.output_dir]
    if root.parent == _STATE_ROOT:
        state_directory = f"StateDirectory={root.name}\nStateDirectoryMode=0750\n"
        writable.remove(ws.root)
    paths = " ".join(
        _systemd_path("-" + str(path))
        for path in dict.fromkeys(writable)
        if path == ws.root or not _inside(path, ws.root)
    )
    read_write = f"ReadWritePaths={paths}\n" if paths else ""
    environment = "".join(
        f"Environment={_systemd_path(f'{name}={value}')}\n" for name, value in _env(dep)
    )
    return render_template(
        "comfyfleet.service",
        header=header("systemd"),
        summary=summary,
        unit=unit,
        description=description,
        user=dep.service_user,
        environment=environment,
        workspace=_systemd_path(str(ws.root), quote=False),
        state_directory=state_directory,
        exec_start=f"{_systemd_path(str(dep.executable))} {role}",
        stop_timeout=_stop_timeout(dep),
        read_write=read_write,
        protect_home="read-only" if _touches_home(dep, ws) else "yes",
    )


def _env(dep: Deployment) -> list[tuple[str, str]]:
    """The environment of the service: its workspace and settings file, and a home inside the
    workspace (caches of torch and custom nodes go there, not into a protected home)."""
    root = str(dep.settings.workspace)
    pairs = [("COMFYFLEET_WORKSPACE", root), ("HOME", root)]
    if dep.config_file is not None:
        pairs.append(("COMFYFLEET_CONFIG", str(dep.config_file)))
    return pairs


def _stop_timeout(dep: Deployment) -> int:
    return int(dep.settings.fleet.stop_grace_s) + 30


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _touches_home(dep: Deployment, ws: Workspace) -> bool:
    paths = [ws.root, ws.models_dir, ws.input_dir, ws.output_dir, dep.executable]
    if dep.config_file is not None:
        paths.append(dep.config_file)
    return any(
        home == PurePosixPath(path) or home in PurePosixPath(path).parents
        for path in paths
        for home in _HOMES
    )


def _systemd_path(text: str, *, quote: bool = True) -> str:
    """A word of a unit file: `%` doubled (it starts specifiers), quoted when it has spaces
    (but for settings such as WorkingDirectory=, which take the rest of the line as it is)."""
    _refuse_controls(text)
    escaped = text.replace("%", "%%")
    if quote and any(char in escaped for char in ' "\\'):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _supervisor_value(text: str) -> str:
    """A value of supervisord's config: `%` doubled (it starts `%(name)s` expansions)."""
    _refuse_controls(text)
    if '"' in text and not text.startswith("/bin/sh -c"):
        raise DeployError(f"supervisord cannot take the value {text!r}: it has a double quote")
    return text.replace("%", "%%")


def _refuse_controls(text: str) -> None:
    if any(ord(char) < 32 for char in text):
        raise DeployError(f"the path or value {text!r} has a control character (a line break?)")
