"""The `k8s` target: the gateway (Deployment + Service), the agents (DaemonSet on GPU nodes),
the settings (ConfigMap), and the names of the Secrets they read.

A fleet on Kubernetes needs a store every pod reaches (PostgreSQL) and an output store every
agent writes to and every gateway signs for (S3, Azure or HTTP): the user's settings give them
where they can; otherwise the manifests name placeholders and the export says so.
"""

from __future__ import annotations

from comfyfleet.deploy._carried import carried_settings, strip_password
from comfyfleet.deploy._compose import stop_grace_s
from comfyfleet.deploy._docker import UID
from comfyfleet.deploy._model import Deployment, Rendered
from comfyfleet.deploy._templates import header, render_template, yaml_str

CONFIG_PATH = "/etc/comfyfleet/comfyfleet.yaml"
PLACEHOLDER_STORE = "postgresql://comfyfleet@postgres:5432/comfyfleet"
PLACEHOLDER_STORAGE = "s3://comfyfleet/outputs"


def k8s_files(dep: Deployment) -> Rendered:
    carried = carried_settings(dep.settings)
    env, notes = _env(dep)
    values = {
        "header": header("k8s"),
        "image": dep.image,
        "uid": UID,
        "port": dep.settings.serve.port,
        "env": env,
    }
    settings_text = carried.to_yaml("")
    files = {
        "settings.yaml": render_template(
            "k8s-settings.yaml", header=header("k8s"), settings=_indent(settings_text, 4)
        ),
        "gateway.yaml": render_template("k8s-gateway.yaml", **values),
        "agent.yaml": render_template(
            "k8s-agent.yaml", gpus=_gpus(dep), stop_grace=stop_grace_s(dep), **values
        ),
        "secrets.example.env": _secrets_example(carried.secret_vars),
    }
    return Rendered(files, (*carried.notes, *notes))


def _env(dep: Deployment) -> tuple[str, tuple[str, ...]]:
    """The containers' environment: the settings file, the store, and the output store when
    the settings have none that every pod reaches."""
    notes = []
    store = dep.settings.serve.store
    if store.startswith(("postgresql://", "postgres://")):
        store = strip_password(store)[0]
    else:
        notes.append(
            f"serve.store is not PostgreSQL: the manifests use {PLACEHOLDER_STORE}; "
            "set it to your database"
        )
        store = PLACEHOLDER_STORE
    pairs = [("COMFYFLEET_CONFIG", CONFIG_PATH), ("COMFYFLEET_SERVE__STORE", store)]
    if dep.settings.storage.target.kind == "local":
        notes.append(
            f"storage.url is local: the manifests use {PLACEHOLDER_STORAGE}; set it (and "
            "storage.endpoint_url for an S3-compatible store) to one every agent can write to"
        )
        pairs.append(("COMFYFLEET_STORAGE__URL", PLACEHOLDER_STORAGE))
    lines = "\n".join(
        f"            - name: {name}\n              value: {yaml_str(value)}"
        for name, value in pairs
    )
    return lines, tuple(notes)


def _gpus(dep: Deployment) -> int:
    """GPUs per agent pod: the settings' `fleet.gpus` when given, else one (Kubernetes cannot
    ask for "all of the node's"; set it to your nodes' count)."""
    gpus = dep.settings.fleet.gpus
    return len(gpus) if gpus else 1


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").splitlines())


def _secrets_example(secret_vars: tuple[str, ...]) -> str:
    known = {
        "PGPASSWORD",
        "COMFYFLEET_AUTH__API_KEY",
        "COMFYFLEET_AUTH__SESSION_SECRET",
        "COMFYFLEET_WEBHOOKS__SECRET",
    }
    extra = "".join(f"# {name}=\n" for name in secret_vars if name not in known)
    if extra:
        extra = "# Secrets your settings hold (set them here instead):\n" + extra
    text = render_template("secrets.example.env", header=header("k8s"), settings_secrets=extra)
    return text.rstrip("\n") + "\n"
