"""The workspace layout, preparing it, and the extra_model_paths.yaml pointing ComfyUI at models."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyfleet.config import Settings
from comfyfleet.errors import ConfigError, WorkspaceError
from comfyfleet.workspace import (
    MODEL_FOLDER_TYPES,
    Workspace,
    render_extra_model_paths,
    write_extra_model_paths,
)


def make_workspace(root: Path, **paths: Path) -> Workspace:
    return Workspace.from_settings(Settings.model_construct(workspace=root, **_defaults(paths)))


def _defaults(paths: dict[str, Path]) -> dict[str, Any]:
    return {name: paths.get(name) for name in ("models_root", "input_dir", "output_dir")}


# --- paths --------------------------------------------------------------------------------------


def test_paths_default_inside_the_workspace(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    root = tmp_path / "ws"
    assert ws.root == root
    assert ws.models_dir == root / "models"
    assert ws.input_dir == root / "input"
    assert ws.output_dir == root / "output"
    assert ws.comfyui_dir == root / "comfyui"
    assert ws.venv_dir == root / "venv"
    assert ws.python == root / "venv" / "bin" / "python"
    assert ws.custom_nodes_dir == root / "custom_nodes"
    assert ws.lock_file == root / "comfyfleet.lock"
    assert ws.extra_model_paths == root / "extra_model_paths.yaml"
    assert ws.install_log == root / "logs" / "install.log"
    assert ws.installed_marker == root / "state" / "installed.json"
    assert ws.instance_dir(2) == root / "instances" / "2"
    assert ws.instance_log(2) == root / "logs" / "instance-2.log"


def test_models_input_output_can_live_elsewhere(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws",
        models_root=tmp_path / "shared",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
    )
    assert ws.models_dir == tmp_path / "shared"
    assert ws.input_dir == tmp_path / "in"
    assert ws.output_dir == tmp_path / "out"


def test_building_a_workspace_touches_nothing(tmp_path: Path) -> None:
    make_workspace(tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


# --- prepare ------------------------------------------------------------------------------------


def test_prepare_creates_runtime_folders_but_not_comfyui_or_venv(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    ws.prepare()
    made = sorted(p.name for p in ws.root.iterdir())
    assert made == sorted(
        ["custom_nodes", "instances", "logs", "state", "input", "output", "models"]
    )
    assert not ws.comfyui_dir.exists()
    assert not ws.venv_dir.exists()


def test_prepare_is_repeatable(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    ws.prepare()
    (ws.logs_dir / "install.log").write_text("kept\n", encoding="utf-8")
    ws.prepare()
    assert (ws.logs_dir / "install.log").read_text(encoding="utf-8") == "kept\n"


def test_prepare_creates_outside_folders(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws", models_root=tmp_path / "m" / "root", output_dir=tmp_path / "o" / "x"
    )
    ws.prepare()
    assert (tmp_path / "m" / "root").is_dir()
    assert (tmp_path / "o" / "x").is_dir()
    assert not (ws.root / "models").exists()


def test_workspace_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    ws = make_workspace(blocker / "ws")
    with pytest.raises(WorkspaceError, match="cannot create workspace") as info:
        ws.prepare()
    assert str(blocker / "ws") in str(info.value)


def test_output_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    ws = make_workspace(tmp_path / "ws", output_dir=blocker / "out")
    with pytest.raises(WorkspaceError, match="output folder") as info:
        ws.prepare()
    assert str(blocker / "out") in str(info.value)


def test_models_root_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    ws = make_workspace(tmp_path / "ws", models_root=blocker / "models")
    with pytest.raises(WorkspaceError, match="models root") as info:
        ws.prepare()
    assert str(blocker / "models") in str(info.value)


def test_read_only_existing_models_root_is_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "checkpoints").mkdir(parents=True)
    (shared / "checkpoints" / "model.safetensors").write_bytes(b"weights")
    shared.chmod(0o555)
    try:
        ws = make_workspace(tmp_path / "ws", models_root=shared)
        ws.prepare()
        assert sorted(p.name for p in shared.iterdir()) == ["checkpoints"]
        assert (shared / "checkpoints" / "model.safetensors").read_bytes() == b"weights"
    finally:
        shared.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_workspace_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(WorkspaceError, match=re.escape(str(root))):
            make_workspace(root).prepare()
    finally:
        root.chmod(0o755)


# --- require_installed --------------------------------------------------------------------------


def test_require_installed_on_missing_workspace(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="does not exist") as info:
        ws.require_installed()
    assert str(tmp_path / "ws") in str(info.value)
    assert info.value.hint is not None and "comfyfleet install" in info.value.hint


def test_require_installed_on_prepared_but_not_installed_workspace(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    ws.prepare()
    with pytest.raises(WorkspaceError, match="not installed"):
        ws.require_installed()


def test_marker_without_venv_is_not_installed(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    ws.prepare()
    ws.installed_marker.write_text("{}", encoding="utf-8")
    assert not ws.is_installed
    with pytest.raises(WorkspaceError, match="not installed"):
        ws.require_installed()


def test_marker_and_venv_python_make_it_installed(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    ws.prepare()
    ws.installed_marker.write_text("{}", encoding="utf-8")
    ws.python.parent.mkdir(parents=True)
    ws.python.write_text("", encoding="utf-8")
    assert ws.is_installed
    ws.require_installed()


# --- extra_model_paths.yaml ---------------------------------------------------------------------


def section_of(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert list(data) == ["comfyfleet"]
    section: dict[str, Any] = data["comfyfleet"]
    return section


def subfolders(value: str) -> list[str]:
    return [line for line in value.split("\n") if line]


def test_every_folder_type_points_under_the_models_root(tmp_path: Path) -> None:
    models, nodes = tmp_path / "models", tmp_path / "ws" / "custom_nodes"
    section = section_of(render_extra_model_paths(models, nodes))
    assert section["base_path"] == str(models)
    assert section["is_default"] is True
    for folder_type, expected in MODEL_FOLDER_TYPES.items():
        assert subfolders(section[folder_type]) == [f"{sub}/" for sub in expected], folder_type
        for sub in subfolders(section[folder_type]):
            assert not Path(sub).is_absolute()
            assert ".." not in Path(sub).parts


def test_text_encoders_searches_both_layouts(tmp_path: Path) -> None:
    section = section_of(render_extra_model_paths(tmp_path / "m", tmp_path / "n"))
    assert subfolders(section["text_encoders"]) == ["text_encoders/", "clip/"]
    assert subfolders(section["diffusion_models"]) == ["diffusion_models/", "unet/"]


def test_custom_nodes_lists_the_runtime_extension_then_the_workspace_folder(
    tmp_path: Path,
) -> None:
    nodes = tmp_path / "ws" / "custom_nodes"
    section = section_of(render_extra_model_paths(tmp_path / "m", nodes))
    runtime, workspace_nodes = section["custom_nodes"].split("\n")
    # ComfyUI inserts each default folder in front: the one listed last is searched first.
    assert workspace_nodes == str(nodes)
    assert (Path(runtime) / "comfyfleet_runtime" / "__init__.py").is_file()
    assert all(Path(p).is_absolute() for p in (runtime, workspace_nodes))


def test_the_file_says_it_is_generated(tmp_path: Path) -> None:
    text = render_extra_model_paths(tmp_path / "m", tmp_path / "n")
    assert text.startswith("#")
    assert "Do not edit" in text.splitlines()[0]


def test_override_replaces_one_type(tmp_path: Path) -> None:
    section = section_of(
        render_extra_model_paths(
            tmp_path / "m",
            tmp_path / "n",
            {"checkpoints": "Stable-diffusion, extra/ckpt", "loras": "/mnt/loras"},
        )
    )
    assert subfolders(section["checkpoints"]) == ["Stable-diffusion/", "extra/ckpt/"]
    assert subfolders(section["loras"]) == ["/mnt/loras/"]
    assert subfolders(section["vae"]) == ["vae/"]


def test_unknown_folder_type_override_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checkpionts") as info:
        render_extra_model_paths(tmp_path / "m", tmp_path / "n", {"checkpionts": "x"})
    assert "checkpoints" in str(info.value)  # the known types are listed


def test_override_climbing_out_of_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model_folders\.vae") as info:
        render_extra_model_paths(tmp_path / "m", tmp_path / "n", {"vae": "vae, ../../etc"})
    assert "../../etc" in str(info.value)


def test_write_extra_model_paths_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "extra_model_paths.yaml"
    target.write_text("old: content\n", encoding="utf-8")
    write_extra_model_paths(target, tmp_path / "m", tmp_path / "n", {"vae": "VAE"})
    section = section_of(target.read_text(encoding="utf-8"))
    assert subfolders(section["vae"]) == ["VAE/"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra_model_paths.yaml"]
