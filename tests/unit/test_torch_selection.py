"""Which torch build gets installed for each machine and each `--torch` choice."""

from __future__ import annotations

import pytest

from comfyfleet.errors import TorchError
from comfyfleet.gpus import Gpu, Platform
from comfyfleet.provision._torch import (
    TorchPlan,
    companion_pins,
    cuda_variant_for,
    select_torch,
)

BASE = "https://download.pytorch.org/whl"


def nvidia(cuda: tuple[int, int] | None) -> Platform:
    gpu = Gpu(0, "NVIDIA H100", 81559, "GPU-0", "nvidia")
    return Platform("nvidia", (gpu,), cuda, None, "570.86.15", "nvml")


CPU = Platform("cpu", (), None, None, None, "none")
AMD = Platform("amd", (Gpu(0, "MI300X", None, None, "amd"),), None, "6.4.1", None, "rocm-smi")
APPLE = Platform(
    "apple", (Gpu(0, "Apple Silicon", None, None, "apple"),), None, None, None, "apple"
)


def select(choice: str, platform: Platform, **kwargs: str) -> TorchPlan:
    return select_torch(choice, platform, index_base=BASE, system="Linux", **kwargs)


@pytest.mark.parametrize(
    ("driver", "variant"),
    [
        ((13, 1), "cu130"),
        ((13, 0), "cu130"),
        ((12, 9), "cu128"),
        ((12, 8), "cu128"),
        ((12, 6), "cu126"),
        ((12, 4), None),
        ((11, 8), None),
        (None, None),
    ],
)
def test_cuda_variant_for_driver(driver: tuple[int, int] | None, variant: str | None) -> None:
    assert cuda_variant_for(driver) == variant


def test_auto_on_nvidia_picks_the_newest_build_the_driver_runs() -> None:
    plan = select("auto", nvidia((12, 8)))
    assert plan == TorchPlan("auto", "cu128", ("torch",), f"{BASE}/cu128", False, ())


def test_auto_on_old_nvidia_driver_is_refused_with_a_way_out() -> None:
    with pytest.raises(TorchError) as caught:
        select("auto", nvidia((12, 4)))
    assert "CUDA 12.4" in caught.value.message
    assert caught.value.hint == (
        "update the NVIDIA driver to one supporting CUDA 12.6 or newer, or use --torch cpu"
    )


def test_auto_on_nvidia_with_unknown_cuda_version_is_refused() -> None:
    with pytest.raises(TorchError, match="could not tell which CUDA version"):
        select("auto", nvidia(None))


def test_auto_on_amd_apple_and_cpu() -> None:
    assert select("auto", AMD).index_url == f"{BASE}/rocm6.4"
    assert select("auto", AMD).variant == "rocm6.4"
    apple = select("auto", APPLE)
    assert (apple.variant, apple.index_url, apple.requirements) == ("mps", None, ("torch",))
    cpu = select("auto", CPU)
    assert (cpu.variant, cpu.index_url) == ("cpu", f"{BASE}/cpu")


def test_cpu_builds_on_macos_come_from_the_default_index() -> None:
    plan = select_torch("cpu", CPU, index_base=BASE, system="Darwin")
    assert (plan.variant, plan.index_url) == ("cpu", None)


def test_version_pins_torch_on_the_variant_index() -> None:
    plan = select("cu126", nvidia((12, 8)), version="2.13.0")
    assert plan.requirements == ("torch==2.13.0",)
    assert plan.index_url == f"{BASE}/cu126"
    assert plan.warnings == ()


def test_index_base_trailing_slash_is_ignored() -> None:
    plan = select_torch("cpu", CPU, index_base="https://mirror.example/whl/", system="Linux")
    assert plan.index_url == "https://mirror.example/whl/cpu"


def test_bad_version_is_refused() -> None:
    with pytest.raises(TorchError, match="'latest' is not a version"):
        select("cpu", CPU, version="latest")


def test_cuda_build_newer_than_the_driver_warns_but_installs() -> None:
    plan = select("cu130", nvidia((12, 8)))
    assert plan.variant == "cu130"
    assert plan.index_url == f"{BASE}/cu130"
    (warning,) = plan.warnings
    assert "driver supports CUDA 12.8 but cu130 wheels need 13.0" in warning


def test_cuda_build_with_unknown_driver_cuda_warns() -> None:
    (warning,) = select("cu128", nvidia(None)).warnings
    assert "unknown" in warning
    assert "12.8" in warning


def test_cuda_build_without_nvidia_gpu_warns() -> None:
    (warning,) = select("CU128", CPU).warnings
    assert warning.startswith("cu128 was asked for but no NVIDIA GPU was found")
    assert "found by none" in warning


def test_rocm_choices() -> None:
    assert select("rocm", AMD).variant == "rocm6.4"
    plan = select("rocm6.3", AMD)
    assert (plan.variant, plan.index_url, plan.warnings) == ("rocm6.3", f"{BASE}/rocm6.3", ())
    (warning,) = select("rocm", nvidia((12, 8))).warnings
    assert "no AMD GPU was found" in warning


def test_mps_choice() -> None:
    assert select("mps", APPLE).warnings == ()
    (warning,) = select("mps", CPU).warnings
    assert "not Apple Silicon" in warning


def test_existing_installs_nothing_and_reuses_system_site_packages() -> None:
    plan = select("existing", nvidia((12, 8)))
    assert plan == TorchPlan("existing", "existing", (), None, True, ())
    (warning,) = select("existing", CPU, version="2.7.1").warnings
    assert "2.7.1 is ignored" in warning


def test_requirement_goes_to_pips_configured_index() -> None:
    plan = select("torch==2.7.1", CPU)
    assert plan == TorchPlan("torch==2.7.1", "spec", ("torch==2.7.1",), None, False, ())
    assert select("torch>=2.6,<2.8", CPU).requirements == ("torch>=2.6,<2.8",)


def test_bare_torch_requirement_takes_the_version() -> None:
    assert select("torch", CPU, version="2.7.1").requirements == ("torch==2.7.1",)


def test_pinned_requirement_ignores_the_version_with_a_warning() -> None:
    plan = select("torch==2.7.1", CPU, version="2.8.0")
    assert plan.requirements == ("torch==2.7.1",)
    (warning,) = plan.warnings
    assert "2.8.0 is ignored" in warning


@pytest.mark.parametrize("choice", ["numpy==2.0", "cu121", "gpu please!"])
def test_anything_else_lists_the_valid_choices(choice: str) -> None:
    with pytest.raises(TorchError) as caught:
        select(choice, CPU)
    assert repr(choice) in caught.value.message
    assert caught.value.hint is not None
    assert "auto, cpu, cu126, cu128, cu130, rocm" in caught.value.hint


@pytest.mark.parametrize(
    ("torch", "vision", "audio"),
    [
        ("2.13.0+cpu", "0.28.0", "2.13.0"),
        ("2.7.1", "0.22.1", "2.7.1"),
        ("2.6.0+cu126", "0.21.0", "2.6.0"),
        ("2.0.1", "0.15.2", "2.0.2"),
        ("2.0.0", "0.15.1", "2.0.1"),
        ("2.9.0.dev20250801+cu128", "0.24.0.dev20250801", "2.9.0.dev20250801"),
    ],
)
def test_companion_pins(torch: str, vision: str, audio: str) -> None:
    assert companion_pins(torch) == {"torchvision": vision, "torchaudio": audio}


@pytest.mark.parametrize("version", ["1.13.1", "not-a-version"])
def test_companion_pins_refuses_old_or_garbled_torch(version: str) -> None:
    with pytest.raises(TorchError, match=version):
        companion_pins(version)
