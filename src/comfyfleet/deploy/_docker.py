"""The `docker` target: the multi-stage Dockerfile, its ignore file, and the nodes it installs.

The image is a CUDA image: torch is installed at build time, on a machine that need not have a
GPU, so the choice `auto` cannot detect anything there and becomes the newest CUDA build the
base image matches; a CPU, ROCm or pip-spec torch is refused rather than put into a CUDA image.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from comfyfleet import __version__
from comfyfleet.deploy._carried import strip_password
from comfyfleet.deploy._errors import DeployError
from comfyfleet.deploy._model import Deployment, Rendered
from comfyfleet.deploy._templates import header, render_template
from comfyfleet.provision import DEFAULT_TORCH_INDEX_URL, InstallSettings, node_set

CUDA_IMAGES = {
    "cu126": "nvidia/cuda:12.6.3-base-ubuntu24.04",
    "cu128": "nvidia/cuda:12.8.1-base-ubuntu24.04",
    "cu130": "nvidia/cuda:13.0.0-base-ubuntu24.04",
}
"""Per torch CUDA build, the base image: CUDA's `base` flavour is enough, since torch's wheels
bring their own CUDA libraries; it holds what the NVIDIA container runtime needs."""
AUTO_TORCH = "cu128"
PYTHON_IMAGE = "python:3.12.11-slim-bookworm"
"""The builder stage only builds comfyfleet's (pure Python) wheel."""
UID = 10001
INSTALL_DIR = "/opt/comfyfleet/install"
VENV_DIR = "/opt/comfyfleet/venv"
SEED_DIR = "/opt/comfyfleet/seed-models"
DEPLOY_DIR = "deploy/docker"
"""Where the Dockerfile sits in the source tree (the build context), for its COPY of nodes.yaml."""


def docker_files(dep: Deployment) -> Rendered:
    install = dep.settings.install
    torch, notes = cuda_torch(install.torch)
    env, env_notes = _install_env(install)
    args = ["--source", _image_source(install), "--torch", torch]
    if install.source.strip().startswith("git"):
        args += ["--comfyui-version", install.comfyui_version]
    dockerfile = render_template(
        "Dockerfile",
        header=header("docker"),
        version=__version__,
        comfyui_version=install.comfyui_version,
        torch=torch,
        dockerfile=f"{DEPLOY_DIR}/Dockerfile",
        deploy_dir=DEPLOY_DIR,
        variant=dep.variant,
        port=dep.settings.serve.port,
        python_image=PYTHON_IMAGE,
        cuda_image=CUDA_IMAGES[torch],
        uid=UID,
        venv=VENV_DIR,
        install_dir=INSTALL_DIR,
        seed_dir=SEED_DIR,
        install_env=env,
        install_args=shlex.join(args),
        start_period=start_period_s(dep),
    )
    files = {
        "Dockerfile": dockerfile,
        "Dockerfile.dockerignore": render_template(
            "Dockerfile.dockerignore", header=header("docker")
        ),
        "nodes.yaml": render_template(
            "nodes.yaml",
            header=header("docker"),
            nodes=_nodes_yaml(install.nodes_file, install.node_sets),
        ),
    }
    return Rendered(files, (*notes, *env_notes))


def start_period_s(dep: Deployment) -> int:
    """How long a starting container is not yet judged by its health check: its instances'
    start timeout, plus time to start the gateway."""
    return int(dep.settings.fleet.startup_timeout_s) + 60


def cuda_torch(choice: str) -> tuple[str, tuple[str, ...]]:
    """The CUDA torch build for the image, from the `install.torch` setting."""
    key = choice.strip().lower()
    if key in CUDA_IMAGES:
        return key, ()
    if key == "auto":
        note = (
            f"install.torch is 'auto': the image gets the {AUTO_TORCH} build (nothing can be "
            "detected while an image is built); set cu126, cu128 or cu130 to choose"
        )
        return AUTO_TORCH, (note,)
    raise DeployError(
        f"install.torch is '{choice}', but the image is a CUDA image",
        hint=f"set install.torch to auto or one of {', '.join(CUDA_IMAGES)} for the export",
    )


def _image_source(install: InstallSettings) -> str:
    """The ComfyUI source as the image build can reach it: a git remote, the package index, or
    an archive URL; never a folder or file of this machine (the build sees only its context)."""
    source = install.source.strip()
    kind, _, rest = source.partition(":")
    local_archive = kind == "archive" and "://" not in rest
    if kind == "path" or local_archive:
        raise DeployError(
            f"install.source '{source}' is on this machine, which an image build cannot see",
            hint="use git, git:URL@REF, index:PKG==VER or archive:https://... for the export",
        )
    return source


def _install_env(install: InstallSettings) -> tuple[str, tuple[str, ...]]:
    """Settings the build's `comfyfleet install` needs beyond its flags (a torch mirror)."""
    url = install.torch_index_url
    if url == DEFAULT_TORCH_INDEX_URL:
        return "", ()
    bare, had_password = strip_password(url)
    if had_password:
        return "", (
            "install.torch_index_url has a password: left out of the Dockerfile (pass the mirror "
            "as a build secret instead)",
        )
    return f"COMFYFLEET_INSTALL__TORCH_INDEX_URL={shlex.quote(bare)} ", ()


def _nodes_yaml(nodes_file: Path | None, node_sets: tuple[str, ...] = ()) -> str:
    """The custom nodes list for the image: the entries of `install.node_sets` (pinned git
    nodes), then those of `install.nodes_file`, which win on a name clash as they do in an
    install; git nodes only, since a node folder of this machine is not in the image's build
    context."""
    from_sets: dict[str, dict[str, str]] = {}
    for name in node_sets:
        for spec in node_set(name).nodes:
            from_sets.setdefault(spec.name, spec.entry())
    own = _own_entries(nodes_file)
    names = {_entry_name(entry) for entry in own}
    entries = [entry for name, entry in from_sets.items() if name not in names] + own
    if not entries:
        return "nodes: []"
    return yaml.safe_dump({"nodes": entries}, sort_keys=False).rstrip("\n")


def _entry_name(entry: Any) -> str:
    if not isinstance(entry, dict):
        return ""
    default = str(entry.get("git", "")).rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return str(entry.get("name") or default)


def _own_entries(nodes_file: Path | None) -> list[Any]:
    if nodes_file is None:
        return []
    try:
        data: Any = yaml.safe_load(nodes_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"cannot read the nodes list {nodes_file}: {exc}") from exc
    entries = data.get("nodes") if isinstance(data, dict) else data
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise DeployError(f"nodes list {nodes_file}: expected a list under 'nodes:'")
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, dict) and "path" in entry:
            raise DeployError(
                f"nodes list {nodes_file} entry {number}: '{entry['path']}' is a folder of this "
                "machine, which an image build cannot see",
                hint="publish the node in a git repository and list it with git: and ref:",
            )
    return entries
