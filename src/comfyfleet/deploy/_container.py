"""The image's entrypoint: put the image's ComfyUI into the workspace volume, then become
`comfyfleet` with the container's arguments.

The image holds ComfyUI, its venv and its custom nodes in a workspace of its own
(`COMFYFLEET_IMAGE_INSTALL`, made by `comfyfleet install` while the image was built); the
workspace volume holds what changes (jobs database, secrets, logs, inputs, outputs). At every
start the volume's `comfyui`, `venv`, `custom_nodes` and `comfyfleet.lock` are pointed at the
image's and its install mark is copied, so a new image takes effect when it first starts and a
volume never keeps an old install. A volume with an install of its own (real folders, from a
`comfyfleet install` run in the container) is left as it is.

Two more things a platform may hand in:
- files in `COMFYFLEET_STATE_SECRETS` (default /run/secrets/comfyfleet) named like a secret
  comfyfleet keeps in `state/` (`idempotency_secret`) are copied there, so that several
  gateways share it;
- the model files of `COMFYFLEET_SEED_MODELS` (the `full` image) are copied into the models root
  where it lacks them.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

LINKED = ("comfyui", "venv", "custom_nodes", "comfyfleet.lock")
MARKER = Path("state") / "installed.json"
STATE_SECRETS = ("idempotency_secret",)
DEFAULT_STATE_SECRETS = Path("/run/secrets/comfyfleet")

Say = Callable[[str], None]


def link_install(image: Path, workspace: Path, say: Say) -> bool:
    """Point `workspace` at the install in `image`; False (and nothing changed) when the
    workspace has an install of its own."""
    own = [name for name in LINKED if _is_real(workspace / name)]
    if own:
        say(f"{workspace} has its own {', '.join(own)}: using that install, not the image's")
        return False
    workspace.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        source = image / name
        if source.exists():
            _replace_with_link(workspace / name, source)
    marker = image / MARKER
    if marker.is_file():
        target = workspace / MARKER
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_atomically(marker, target, mode=0o644)
    return True


def copy_state_secrets(source: Path, state: Path) -> list[str]:
    """Copy the secrets a platform handed in (see the module's docstring) into `state`."""
    copied = []
    for name in STATE_SECRETS:
        path = source / name
        if path.is_file():
            state.mkdir(parents=True, exist_ok=True)
            _copy_atomically(path, state / name, mode=0o600)
            copied.append(name)
    return copied


def seed_models(seed: Path, models: Path, say: Say) -> int:
    """Copy the files of `seed` that `models` lacks; the number copied. A models root that
    cannot be written (a read-only volume) is left alone, with a note."""
    missing = [
        path.relative_to(seed)
        for path in sorted(seed.rglob("*"))
        if path.is_file() and not (models / path.relative_to(seed)).exists()
    ]
    if not missing:
        return 0
    try:
        for relative in missing:
            target = models / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_atomically(seed / relative, target, mode=0o644)
    except OSError as exc:
        say(f"cannot copy the image's models into {models}: {exc.strerror or exc}")
        return 0
    say(f"copied {len(missing)} model file(s) of the image into {models}")
    return len(missing)


def prepare(environ: dict[str, str], say: Say) -> None:
    """Everything the entrypoint does before it becomes `comfyfleet`, from its environment."""
    workspace = Path(environ.get("COMFYFLEET_WORKSPACE", "/workspace"))
    image = environ.get("COMFYFLEET_IMAGE_INSTALL")
    if image:
        link_install(Path(image), workspace, say)
    secrets = Path(environ.get("COMFYFLEET_STATE_SECRETS") or DEFAULT_STATE_SECRETS)
    copy_state_secrets(secrets, workspace / "state")
    seed = environ.get("COMFYFLEET_SEED_MODELS")
    models = environ.get("COMFYFLEET_MODELS_ROOT")
    if seed and models and Path(seed).is_dir():
        seed_models(Path(seed), Path(models), say)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m comfyfleet.deploy ARGS...`: prepare, then exec `comfyfleet ARGS...`."""
    args = list(sys.argv[1:] if argv is None else argv)

    def say(text: str) -> None:
        print(f"comfyfleet entrypoint: {text}", file=sys.stderr, flush=True)

    try:
        prepare(dict(os.environ), say)
    except OSError as exc:
        say(f"error: cannot prepare the workspace: {exc}")
        sys.exit(1)
    os.execvp("comfyfleet", ["comfyfleet", *args])


def _is_real(path: Path) -> bool:
    return path.exists() and not path.is_symlink()


def _replace_with_link(path: Path, source: Path) -> None:
    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(source)
    os.replace(tmp, path)


def _copy_atomically(source: Path, target: Path, *, mode: int) -> None:
    tmp = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, tmp)
    tmp.chmod(mode)
    os.replace(tmp, target)
