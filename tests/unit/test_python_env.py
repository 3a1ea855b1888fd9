"""ComfyUI's requirements without the torch family, which is installed and pinned first."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.provision._python_env import comfy_requirements

COMFY_REQUIREMENTS = """\
comfyui-frontend-package==1.28.8
torch
torchsde
torchvision>=0.19  # the matching build is chosen by comfyfleet
torchaudio[extra]==2.8.0
Torch ; sys_platform == "linux"
numpy>=1.25.0
einops
# a comment line
transformers>=4.37.2   # trailing comment

safetensors>=0.4.2
pytorch-lightning
"""


def requirement_lines(tmp_path: Path, text: str | None) -> list[str]:
    comfy = tmp_path / "comfyui"
    comfy.mkdir()
    if text is not None:
        (comfy / "requirements.txt").write_text(text, encoding="utf-8")
    dest = comfy_requirements(comfy, tmp_path / "requirements-no-torch.txt")
    assert dest == tmp_path / "requirements-no-torch.txt"
    content = dest.read_text(encoding="utf-8")
    assert content.endswith("\n")
    return content.splitlines()


def test_torch_family_is_dropped_and_requests_added(tmp_path: Path) -> None:
    assert requirement_lines(tmp_path, COMFY_REQUIREMENTS) == [
        "comfyui-frontend-package==1.28.8",
        "torchsde",
        "numpy>=1.25.0",
        "einops",
        "transformers>=4.37.2",
        "safetensors>=0.4.2",
        "pytorch-lightning",
        "requests",
    ]


def test_no_line_names_a_torch_family_package(tmp_path: Path) -> None:
    lines = requirement_lines(tmp_path, COMFY_REQUIREMENTS)
    names = {
        line.split(";")[0].split("[")[0].split("=")[0].split(">")[0].strip().lower()
        for line in lines
    }
    assert names.isdisjoint({"torch", "torchvision", "torchaudio"})
    assert not any(line.lstrip().startswith("#") for line in lines)


def test_options_and_odd_lines_are_kept(tmp_path: Path) -> None:
    lines = requirement_lines(
        tmp_path, "--extra-index-url https://example.org/simple\nav>=14\ntorch==2.8.0\n"
    )
    assert lines == ["--extra-index-url https://example.org/simple", "av>=14", "requests"]


def test_missing_requirements_file_still_gives_requests(tmp_path: Path) -> None:
    assert requirement_lines(tmp_path, None) == ["requests"]
