"""Filling the venv: the chosen torch first, then ComfyUI's requirements under constraints.

torch goes in first, from the index its variant needs; torchvision and torchaudio follow at the
versions that match it. ComfyUI's requirements (and every custom node's) are then installed under a
constraints file that pins those three, so nothing can swap the chosen torch for another build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from comfyfleet.errors import InstallError, TorchError
from comfyfleet.provision._audio_repair import (
    AUDIO_REPAIR_NAME,
    apply_audio_repair,
    audio_repair_installed,
    needs_audio_repair,
    remove_audio_repair,
    torchaudio_import_error,
)
from comfyfleet.provision._repair import (
    REPAIR_NAME,
    apply_repair,
    needs_repair,
    repair_installed,
    torchvision_import_error,
)
from comfyfleet.provision._report import Reporter
from comfyfleet.provision._run import CommandFailed
from comfyfleet.provision._torch import TorchPlan, companion_pins
from comfyfleet.provision._venv import Pip, normalize_name

TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio"})
UNLISTED_REQUIREMENTS = ("requests",)
"""Imported by ComfyUI without being in its requirements.txt (newer transformers stopped pulling
it in)."""

_TORCH_HINT = (
    "where only a package index is reachable, use --torch torch==VERSION (the index's own build) "
    "or --torch existing"
)


@dataclass(frozen=True)
class TorchInstall:
    """The torch that ended up in the venv."""

    version: str
    torchvision: str | None
    torchaudio: str | None
    repairs: tuple[str, ...]


def install_torch(
    pip: Pip, plan: TorchPlan, reporter: Reporter, *, locked: Mapping[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """Install torch per `plan` (or at the locked version); returns its version and the pins
    of the torch family that every later install must keep."""
    where = plan.index_url or "the configured package index"
    if plan.variant != "existing":
        wanted = (
            [f"torch=={locked['torch']}"]
            if locked and "torch" in locked
            else list(plan.requirements)
        )
        try:
            pip.install(wanted, index_url=plan.index_url, what=f"installing torch ({plan.variant})")
        except CommandFailed as exc:
            raise TorchError(
                f"torch ({plan.variant}) could not be installed from {where}: "
                f"{exc.message.split(': ', 1)[-1]}",
                hint=_TORCH_HINT,
            ) from exc
    version = pip.version_of("torch")
    if version is None:
        raise TorchError(
            f"no torch is importable in the venv (--torch {plan.choice})",
            hint="install torch into the system Python for --torch existing, or choose a build",
        )
    pins = {"torch": version}
    for name, pin in companion_pins(version).items():
        present = pip.version_of(name)
        if present is not None and plan.variant == "existing":
            pins[name] = present
            continue
        wanted_version = (locked or {}).get(name, pin)
        try:
            pip.install(
                [f"{name}=={wanted_version}"],
                constraints=pins,
                index_url=plan.index_url,
                what=f"installing {name}",
            )
            pins[name] = wanted_version
        except CommandFailed as exc:
            if name == "torchvision":
                raise TorchError(
                    f"no torchvision {wanted_version} for torch {version} on {where}",
                    hint=_TORCH_HINT,
                ) from exc
            older = _older_torchaudio(pip, plan, version, reporter, locked=locked)
            if older is None:
                reporter.warn(
                    f"no {name} {wanted_version} for torch {version} on {where}: ComfyUI 0.3 "
                    "starts without it (its audio nodes do not load); newer releases do not start"
                )
    return version, pins


def _older_torchaudio(
    pip: Pip,
    plan: TorchPlan,
    torch_version: str,
    reporter: Reporter,
    *,
    locked: Mapping[str, str] | None,
) -> str | None:
    """The newest torchaudio not newer than torch, installed without its dependencies (it
    would pull its own torch), with the repair when its compiled extension cannot load; None
    (and nothing left installed) when there is none or it does not import even so. A locked
    install takes the lock's torchaudio, and none when the lock has none."""
    if locked is not None and "torchaudio" not in locked:
        return None
    wanted = (
        f"torchaudio=={locked['torchaudio']}"
        if locked is not None
        else f"torchaudio<={Version(torch_version).base_version}"
    )
    try:
        pip.install(
            [wanted],
            index_url=plan.index_url,
            no_deps=True,
            what="installing an older torchaudio",
        )
    except CommandFailed:
        return None
    error = torchaudio_import_error(pip.python)
    if needs_audio_repair(error):
        apply_audio_repair(pip.python)
        error = torchaudio_import_error(pip.python)
    installed = pip.version_of("torchaudio")
    if error is None and installed is not None:
        reporter.warn(
            f"the index has no torchaudio for torch {torch_version}: installed torchaudio "
            f"{installed} (built for an older torch) so that ComfyUI starts; its compiled "
            "functions are unavailable. `comfyfleet doctor` reports it."
        )
        return installed
    remove_audio_repair(pip.python)
    pip.uninstall(["torchaudio"], what="removing a torchaudio that does not import")
    return None


def comfy_requirements(comfy_dir: Path, dest: Path) -> Path:
    """ComfyUI's requirements.txt without the torch family (already installed and pinned)."""
    source = comfy_dir / "requirements.txt"
    kept: list[str] = []
    if source.is_file():
        for raw in source.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if _requirement_name(line) in TORCH_FAMILY:
                continue
            kept.append(line)
    kept.extend(UNLISTED_REQUIREMENTS)
    dest.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return dest


def _requirement_name(line: str) -> str | None:
    try:
        return normalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def check_torchvision(pip: Pip, reporter: Reporter, *, allow_repair: bool) -> tuple[str, ...]:
    """Make sure `import torchvision` works; repair the known mismatch if allowed."""
    audio = (AUDIO_REPAIR_NAME,) if audio_repair_installed(pip.python) else ()
    error = torchvision_import_error(pip.python)
    if error is None:
        return ((REPAIR_NAME,) if repair_installed(pip.python) else ()) + audio
    if needs_repair(error) and allow_repair:
        apply_repair(pip.python)
        reporter.warn(
            "this index's torchvision was built for another torch build (its compiled ops cannot "
            "load); comfyfleet installed a repair so it imports, and torchvision's compiled ops "
            "(nms, roi_align ...) are unavailable. `comfyfleet doctor` reports it."
        )
        error = torchvision_import_error(pip.python)
        if error is None:
            return (REPAIR_NAME, *audio)
    raise InstallError(
        f"torchvision does not import against the installed torch: {error}",
        hint="choose a torch build whose torchvision is on your index (--torch), "
        "or allow the repair (install.repair_torchvision: true)",
    )
