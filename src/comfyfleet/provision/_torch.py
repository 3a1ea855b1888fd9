"""Choosing which torch build to install for a machine.

torch ships one wheel per accelerator stack (cu126, cu128, rocm6.4, ...) on its own package index,
and installing the wrong one fails silently: torch imports fine, then runs on the CPU. So the
choice is made here, up front, from what :func:`comfyfleet.gpus.detect_platform` found, and a
choice that will not use the GPU is either refused ("auto") or installed with a visible warning
(an explicit choice, since the user may know better: e.g. building an image on a GPU-less host).
"""

from __future__ import annotations

import platform as _platform
import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from comfyfleet.errors import TorchError
from comfyfleet.gpus import Platform

#: Newest first: the CUDA version each wheel variant needs the driver to support.
CUDA_VARIANTS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("cu130", (13, 0)),
    ("cu128", (12, 8)),
    ("cu126", (12, 6)),
)
DEFAULT_ROCM = "rocm6.4"
VALID_CHOICES = (
    "auto, cpu, cu126, cu128, cu130, rocm, rocmX.Y, mps, existing, "
    "or a torch requirement such as 'torch==2.7.1'"
)
_ROCM = re.compile(r"rocm\d+\.\d+(\.\d+)?")
_NO_GPU_LEFT = "torch will run on the CPU"


@dataclass(frozen=True)
class TorchPlan:
    """What to pip-install for torch, from where, and what the user should be told about it."""

    choice: str
    variant: str
    requirements: tuple[str, ...]
    index_url: str | None
    system_site_packages: bool
    warnings: tuple[str, ...]


def cuda_variant_for(driver: tuple[int, int] | None) -> str | None:
    """The newest CUDA wheel variant a driver supporting CUDA `driver` can run, if any."""
    if driver is None:
        return None
    return next((variant for variant, need in CUDA_VARIANTS if driver >= need), None)


def select_torch(
    choice: str,
    platform: Platform,
    *,
    index_base: str,
    version: str | None = None,
    system: str | None = None,
) -> TorchPlan:
    """Turn the user's `--torch` choice into a :class:`TorchPlan` for this platform.

    `index_base` is the root of torch's wheel indexes (e.g. https://download.pytorch.org/whl), so
    sites with a mirror can point it elsewhere. `system` (platform.system() when None) matters only
    for CPU builds, which macOS takes from pip's default index rather than torch's CPU index.
    """
    raw = choice.strip()
    key = raw.lower()
    base = index_base.rstrip("/")
    pin = _pinned_torch(version)
    if key == "auto":
        return _auto(raw, platform, base, pin, system)
    if key == "existing":
        notes = (f"torch version {version} is ignored: 'existing' installs nothing",)
        return TorchPlan(raw, "existing", (), None, True, notes if version else ())
    if key == "mps":
        return TorchPlan(raw, "mps", (pin,), None, False, _mps_warnings(platform))
    if key == "cpu":
        return _cpu(raw, base, pin, system)
    if key in {variant for variant, _ in CUDA_VARIANTS}:
        return _index_plan(raw, key, base, pin, _cuda_warnings(key, platform))
    if key == "rocm" or _ROCM.fullmatch(key):
        variant = DEFAULT_ROCM if key == "rocm" else key
        return _index_plan(raw, variant, base, pin, _rocm_warnings(variant, platform))
    return _spec(raw, version)


def _pinned_torch(version: str | None) -> str:
    if version is None:
        return "torch"
    try:
        Version(version)
    except InvalidVersion:
        raise TorchError(
            f"torch version {version!r} is not a version number",
            hint="give a version such as 2.7.1, or leave it out for the newest",
        ) from None
    return f"torch=={version}"


def _index_plan(
    choice: str, variant: str, base: str, pin: str, warnings: tuple[str, ...]
) -> TorchPlan:
    return TorchPlan(choice, variant, (pin,), f"{base}/{variant}", False, warnings)


def _auto(choice: str, platform: Platform, base: str, pin: str, system: str | None) -> TorchPlan:
    if platform.kind == "nvidia":
        variant = cuda_variant_for(platform.cuda_driver_version)
        if variant is None:
            raise TorchError(_old_driver_message(platform), hint=_OLD_DRIVER_HINT)
        return _index_plan(choice, variant, base, pin, ())
    if platform.kind == "amd":
        return _index_plan(choice, DEFAULT_ROCM, base, pin, ())
    if platform.kind == "apple":
        # PyPI's own macOS arm64 wheels are built with MPS; torch's index adds nothing.
        return TorchPlan(choice, "mps", (pin,), None, False, ())
    return _cpu(choice, base, pin, system)


_OLD_DRIVER_HINT = (
    "update the NVIDIA driver to one supporting CUDA 12.6 or newer, or use --torch cpu"
)


def _old_driver_message(platform: Platform) -> str:
    driver = platform.cuda_driver_version
    if driver is None:
        return (
            f"could not tell which CUDA version the NVIDIA driver supports (found by "
            f"{platform.how}), so no torch build can be chosen automatically"
        )
    return (
        f"the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, older than the 12.6 that the "
        f"oldest offered torch build (cu126) needs"
    )


def _cpu(choice: str, base: str, pin: str, system: str | None) -> TorchPlan:
    system = _platform.system() if system is None else system
    # torch's CPU index exists for Linux and Windows; on macOS the default wheels are the CPU ones.
    index = None if system == "Darwin" else f"{base}/cpu"
    return TorchPlan(choice, "cpu", (pin,), index, False, ())


def _found(platform: Platform) -> str:
    return f"this machine is {platform.kind}, found by {platform.how}"


def _cuda_warnings(variant: str, platform: Platform) -> tuple[str, ...]:
    need = dict(CUDA_VARIANTS)[variant]
    need_text = f"{need[0]}.{need[1]}"
    if platform.kind != "nvidia":
        return (
            f"{variant} was asked for but no NVIDIA GPU was found ({_found(platform)}); "
            f"{_NO_GPU_LEFT}",
        )
    driver = platform.cuda_driver_version
    if driver is None:
        return (
            f"{variant} was asked for but the CUDA version the NVIDIA driver supports is unknown; "
            f"{variant} wheels need {need_text}, if the driver is older {_NO_GPU_LEFT}",
        )
    if driver < need:
        return (
            f"the NVIDIA driver supports CUDA {driver[0]}.{driver[1]} but {variant} wheels need "
            f"{need_text}; {_NO_GPU_LEFT} until the driver is updated",
        )
    return ()


def _rocm_warnings(variant: str, platform: Platform) -> tuple[str, ...]:
    if platform.kind == "amd":
        return ()
    return (
        f"{variant} was asked for but no AMD GPU was found ({_found(platform)}); {_NO_GPU_LEFT}",
    )


def _mps_warnings(platform: Platform) -> tuple[str, ...]:
    if platform.kind == "apple":
        return ()
    return (
        f"mps was asked for but this is not Apple Silicon ({_found(platform)}); {_NO_GPU_LEFT}",
    )


def _spec(raw: str, version: str | None) -> TorchPlan:
    """A requirement for torch, installed from pip's configured index (a site's mirror)."""
    try:
        requirement = Requirement(raw)
    except InvalidRequirement:
        raise TorchError(
            f"unknown torch choice {raw!r}", hint=f"choose one of {VALID_CHOICES}"
        ) from None
    if canonicalize_name(requirement.name) != "torch":
        raise TorchError(
            f"torch choice {raw!r} names the package {requirement.name!r}, not torch",
            hint=f"choose one of {VALID_CHOICES}",
        )
    warnings: tuple[str, ...] = ()
    if version is not None:
        if not requirement.specifier and requirement.url is None:
            requirement.specifier = SpecifierSet(f"=={version}")
            raw_pinned = str(requirement)
            return TorchPlan(raw, "spec", (raw_pinned,), None, False, ())
        warnings = (
            f"torch version {version} is ignored: the requirement {raw!r} already says "
            f"which torch to install",
        )
    return TorchPlan(raw, "spec", (raw,), None, False, warnings)


def companion_pins(torch_version: str) -> dict[str, str]:
    """The torchvision and torchaudio releases built against an installed torch.

    Installing them unpinned lets pip pick newer ones that pull in a different torch, replacing the
    build chosen above. torch 2.N.P pairs with torchvision 0.(N+15).P and torchaudio 2.N.P, except
    for 2.0.x, whose companions were re-released once (0.15.0 and torchaudio 2.0.0 never shipped).
    """
    try:
        parsed = Version(torch_version)
    except InvalidVersion:
        raise TorchError(
            f"installed torch reports version {torch_version!r}, which cannot be parsed",
            hint="reinstall torch with --torch auto, or pin a release such as 2.7.1",
        ) from None
    if parsed.major != 2:
        raise TorchError(
            f"torch {torch_version} is not a 2.x release; comfyfleet needs torch 2",
            hint="upgrade torch, e.g. reinstall with --torch auto",
        )
    minor, micro = parsed.minor, parsed.micro
    if (minor, micro) in {(0, 0), (0, 1)} and not parsed.is_prerelease:
        return {"torchvision": f"0.15.{micro + 1}", "torchaudio": f"2.0.{micro + 1}"}
    # Nightlies and release candidates carry the same suffix on all three (e.g. .dev20250101).
    suffix = parsed.public[len(parsed.base_version) :]
    return {"torchvision": f"0.{minor + 15}.{micro}{suffix}", "torchaudio": parsed.public}
