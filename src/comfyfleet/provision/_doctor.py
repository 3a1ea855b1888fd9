"""`comfyfleet doctor`: what is installed, and whether it can work on this machine (the
volumes are `_volumes`' part, the job store and output storage the composition root's).

Checks run inside the workspace venv (a separate interpreter), never by importing torch here.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Literal

from comfyfleet.gpus import Platform
from comfyfleet.provision._audio_repair import audio_repair_installed
from comfyfleet.provision._lock import read_lock
from comfyfleet.provision._repair import repair_installed, torchvision_import_error
from comfyfleet.workspace import Workspace

Level = Literal["ok", "warn", "fail"]

_PROBE = """
import json, importlib.metadata as md
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_build"] = torch.version.cuda
    out["hip_build"] = getattr(torch.version, "hip", None)
    out["cuda_available"] = torch.cuda.is_available()
    out["device_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None)
    out["mps_available"] = bool(mps and mps.is_available())
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
for name in ("torchvision", "torchaudio"):
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str


def _venv_probe(ws: Workspace) -> dict[str, object]:
    out = subprocess.run(
        [str(ws.python), "-c", _PROBE], capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        return {"torch_error": out.stderr.strip().splitlines()[-1:] or ["no output"]}
    data: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def _torch_checks(ws: Workspace, platform: Platform) -> list[Check]:
    info = _venv_probe(ws)
    if "torch_error" in info:
        return [Check("torch", "fail", f"does not import: {info['torch_error']}")]
    build = info.get("cuda_build") or info.get("hip_build") or "cpu"
    checks = [Check("torch", "ok", f"{info['torch']} (build: {build})")]
    if platform.kind in ("nvidia", "amd") and not info.get("cuda_available"):
        checks.append(
            Check(
                "gpu from torch",
                "fail",
                f"this machine has {platform.kind} GPUs but torch sees none; "
                "reinstall with --torch auto",
            )
        )
    elif info.get("cuda_available"):
        checks.append(Check("gpu from torch", "ok", f"{info['device_count']} devices"))
    error = torchvision_import_error(ws.python)
    if error is not None:
        checks.append(Check("torchvision", "fail", f"{info.get('torchvision')}: {error}"))
    elif repair_installed(ws.python):
        checks.append(
            Check(
                "torchvision",
                "warn",
                f"{info.get('torchvision')} imports only "
                "through comfyfleet's repair: it was built for another torch, its "
                "compiled ops (nms, roi_align ...) are unavailable",
            )
        )
    else:
        checks.append(Check("torchvision", "ok", str(info.get("torchvision"))))
    audio = info.get("torchaudio")
    if not audio:
        checks.append(
            Check("torchaudio", "warn", "not installed: ComfyUI's audio nodes will not load")
        )
    elif audio_repair_installed(ws.python):
        checks.append(
            Check(
                "torchaudio",
                "warn",
                f"{audio} was built for an older torch and imports through comfyfleet's repair: "
                "its compiled functions are unavailable",
            )
        )
    else:
        checks.append(Check("torchaudio", "ok", str(audio)))
    return checks


def diagnose(ws: Workspace, platform: Platform) -> list[Check]:
    gpus = ", ".join(g.name for g in platform.gpus) or "none"
    checks = [Check("platform", "ok", f"{platform.kind} (GPUs: {gpus}; found by {platform.how})")]
    if not ws.is_installed:
        checks.append(
            Check("workspace", "fail", f"{ws.root} is not installed: run `comfyfleet install`")
        )
        return checks
    lock = read_lock(ws.lock_file)
    checks.append(Check("comfyui", "ok", f"{lock.comfyui.version} from {lock.comfyui.source}"))
    checks.extend(_torch_checks(ws, platform))
    return checks  # the models root is among the volumes (`_volumes`)
