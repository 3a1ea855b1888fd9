"""The `compose` target: one machine (`serve`) and a fleet (gateway, agent, PostgreSQL, S3).

Both run the image of the Dockerfile, with the user's settings carried in `comfyfleet.yaml`
(mounted read-only) and secrets in env files that are referenced, never written.
"""

from __future__ import annotations

from comfyfleet.deploy._carried import Carried, carried_settings
from comfyfleet.deploy._model import Deployment, Rendered
from comfyfleet.deploy._templates import header, render_template, yaml_str

POSTGRES_IMAGE = "postgres:16.9-bookworm"
S3_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
"""Any S3-compatible store will do; this MinIO release also carries `mc` for the bucket."""

_STANDARD_SECRETS = frozenset(
    {
        "COMFYFLEET_AUTH__API_KEY",
        "COMFYFLEET_AUTH__SESSION_SECRET",
        "COMFYFLEET_WEBHOOKS__SECRET",
        "PGPASSWORD",
    }
)


def compose_files(dep: Deployment) -> Rendered:
    carried = carried_settings(dep.settings)
    values = {
        "header": header("compose"),
        "image": dep.image,
        "ports": yaml_str(published_port(dep.settings.serve.host, dep.settings.serve.port)),
        "stop_grace": stop_grace_s(dep),
    }
    files = {
        "compose.yaml": render_template("compose.yaml", **values),
        "compose.fleet.yaml": render_template(
            "compose.fleet.yaml", postgres_image=POSTGRES_IMAGE, s3_image=S3_IMAGE, **values
        ),
        "comfyfleet.yaml": settings_file(carried, "compose"),
        "comfyfleet.env.example": env_example(carried, "compose"),
        "env.example": render_template("env.example", header=header("compose")),
    }
    return Rendered(files, carried.notes)


def published_port(host: str, port: int) -> str:
    """The `ports:` entry: the gateway published where the settings say it listens, so a
    gateway kept on the loopback stays there (`serve.host: 0.0.0.0` opens it)."""
    if host in ("0.0.0.0", "::", ""):
        return f"{port}:{port}"
    if ":" in host:
        return f"[{host}]:{port}:{port}"
    return f"{host}:{port}:{port}"


def stop_grace_s(dep: Deployment) -> int:
    """Time to stop: the instances' own SIGTERM-to-SIGKILL grace, and some for the rest."""
    return int(dep.settings.fleet.stop_grace_s) + 30


def settings_file(carried: Carried, target: str) -> str:
    intro = (
        "#\n# Your settings as the containers run with them: without secrets (they come from the\n"
        "# environment), paths of your machine (the containers have their own), or defaults.\n"
    )
    return carried.to_yaml(header(target) + intro)


def env_example(carried: Carried, target: str) -> str:
    extra = [name for name in carried.secret_vars if name not in _STANDARD_SECRETS]
    lines = "".join(f"# {name}=\n" for name in extra)
    if lines:
        lines = "# Secrets your settings hold (set them here instead):\n" + lines
    return (
        render_template(
            "comfyfleet.env.example", header=header(target), settings_secrets=lines
        ).rstrip("\n")
        + "\n"
    )
