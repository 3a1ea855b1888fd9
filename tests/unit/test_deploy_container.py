"""The image's entrypoint: the image's install put into the workspace volume at every start,
a volume's own install left alone, platform secrets and seed models copied in."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.deploy._container import copy_state_secrets, link_install, prepare, seed_models
from comfyfleet.workspace import Workspace


def image_install(root: Path, version: str) -> Path:
    """A workspace as `comfyfleet install` leaves it in an image (the parts the volume needs)."""
    for name in ("comfyui", "venv/bin", "custom_nodes"):
        (root / name).mkdir(parents=True)
    (root / "venv" / "bin" / "python").write_text("#!/bin/sh\n")
    (root / "comfyui" / "main.py").write_text(f"# ComfyUI {version}\n")
    (root / "comfyfleet.lock").write_text(f"lock {version}\n")
    (root / "state").mkdir()
    (root / "state" / "installed.json").write_text(f'{{"version": "{version}"}}\n')
    return root


def test_the_volume_uses_the_image_install_and_counts_as_installed(tmp_path: Path) -> None:
    image = image_install(tmp_path / "image", "1")
    volume = tmp_path / "workspace"
    said: list[str] = []
    assert link_install(image, volume, said.append)
    ws = Workspace(
        root=volume,
        models_dir=volume / "models",
        input_dir=volume / "input",
        output_dir=volume / "output",
    )
    assert ws.is_installed
    assert (volume / "comfyui" / "main.py").read_text() == "# ComfyUI 1\n"
    assert (volume / "venv").resolve() == (image / "venv").resolve()
    assert said == []


def test_a_new_image_replaces_the_old_install_at_its_first_start(tmp_path: Path) -> None:
    volume = tmp_path / "workspace"
    link_install(image_install(tmp_path / "old", "1"), volume, print)
    (volume / "state" / "jobs.db").write_text("queued jobs")
    link_install(image_install(tmp_path / "new", "2"), volume, print)
    assert (volume / "comfyui" / "main.py").read_text() == "# ComfyUI 2\n"
    assert (volume / "comfyfleet.lock").read_text() == "lock 2\n"
    assert (volume / "state" / "installed.json").read_text() == '{"version": "2"}\n'
    assert (volume / "state" / "jobs.db").read_text() == "queued jobs"


def test_a_volume_with_its_own_install_is_left_alone(tmp_path: Path) -> None:
    image = image_install(tmp_path / "image", "1")
    volume = tmp_path / "workspace"
    (volume / "comfyui").mkdir(parents=True)
    said: list[str] = []
    assert not link_install(image, volume, said.append)
    assert not (volume / "venv").exists()
    assert said == [f"{volume} has its own comfyui: using that install, not the image's"]


def test_platform_secrets_are_copied_into_state_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    handed = tmp_path / "secrets"
    handed.mkdir()
    (handed / "idempotency_secret").write_text("ab" * 32 + "\n")
    (handed / "unrelated").write_text("x")
    state = tmp_path / "workspace" / "state"
    assert copy_state_secrets(handed, state) == ["idempotency_secret"]
    assert (state / "idempotency_secret").read_text() == "ab" * 32 + "\n"
    assert (state / "idempotency_secret").stat().st_mode & 0o777 == 0o600
    assert not (state / "unrelated").exists()


def test_seed_models_fill_only_what_the_models_root_lacks(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    (seed / "vae_approx").mkdir(parents=True)
    (seed / "vae_approx" / "taesd_decoder.pth").write_bytes(b"seed decoder")
    (seed / "vae_approx" / "taesd_encoder.pth").write_bytes(b"seed encoder")
    models = tmp_path / "models"
    (models / "vae_approx").mkdir(parents=True)
    (models / "vae_approx" / "taesd_decoder.pth").write_bytes(b"the user's own")
    said: list[str] = []
    assert seed_models(seed, models, said.append) == 1
    assert (models / "vae_approx" / "taesd_decoder.pth").read_bytes() == b"the user's own"
    assert (models / "vae_approx" / "taesd_encoder.pth").read_bytes() == b"seed encoder"
    assert said == [f"copied 1 model file(s) of the image into {models}"]
    assert seed_models(seed, models, said.append) == 0


def test_a_models_root_that_cannot_be_written_is_noted_not_fatal(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "a.pth").write_bytes(b"x")
    models = tmp_path / "models"
    (models / ".a.pth.part").mkdir(parents=True)  # the copy's temporary file cannot be made
    said: list[str] = []
    assert seed_models(seed, models, said.append) == 0
    assert not (models / "a.pth").exists()
    assert said[0].startswith(f"cannot copy the image's models into {models}: ")


def test_prepare_reads_the_image_environment(tmp_path: Path) -> None:
    image = image_install(tmp_path / "image", "1")
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "m.pth").write_bytes(b"m")
    environ = {
        "COMFYFLEET_WORKSPACE": str(tmp_path / "ws"),
        "COMFYFLEET_IMAGE_INSTALL": str(image),
        "COMFYFLEET_SEED_MODELS": str(seed),
        "COMFYFLEET_MODELS_ROOT": str(tmp_path / "models"),
        "COMFYFLEET_STATE_SECRETS": str(tmp_path / "none"),
    }
    prepare(environ, print)
    assert (tmp_path / "ws" / "comfyui").is_symlink()
    assert (tmp_path / "models" / "m.pth").read_bytes() == b"m"
