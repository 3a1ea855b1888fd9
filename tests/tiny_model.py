"""A tiny random SD1.5 checkpoint in the cached ComfyUI workspace, and a txt2img graph for it.

Built once per cache (about 300 MB, ~10 s on two cores) by tests/fixtures/make_tiny_sd15.py
with the workspace's own interpreter, so tests can run a real diffusion graph (CLIP, KSampler,
VAE decode) on CPU in seconds. The builder's hash is stored in the file's metadata: editing the
builder rebuilds the checkpoint instead of silently testing a stale one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUILDER = Path(__file__).parent / "fixtures" / "make_tiny_sd15.py"
CHECKPOINT_NAME = "comfyfleet_tiny_sd15.safetensors"
BUILDER_KEY = "comfyfleet_builder_sha256"

KSAMPLER_NODE = "5"
SAVE_NODE = "7"


def _builder_hash() -> str:
    return hashlib.sha256(BUILDER.read_bytes()).hexdigest()


def _metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file: a little-endian u64 length, then JSON."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def tiny_checkpoint(installed_ws: Path) -> str:
    """Make sure the installed workspace has the tiny checkpoint; return its file name.

    It goes into `models/checkpoints/` of the cached workspace so every test workspace can share
    it through `models_root`. A lock serialises concurrent test runs, and the file is built under
    a name ComfyUI does not list, then renamed, so no one ever sees half of it.
    """
    target = installed_ws / "models" / "checkpoints" / CHECKPOINT_NAME
    wanted = _builder_hash()
    with _locked(target.with_name(CHECKPOINT_NAME + ".lock")):
        if target.is_file() and _metadata(target).get(BUILDER_KEY) == wanted:
            return CHECKPOINT_NAME
        partial = target.with_name(CHECKPOINT_NAME + ".partial")
        proc = subprocess.run(
            [
                str(installed_ws / "venv" / "bin" / "python"),
                str(BUILDER),
                str(installed_ws / "comfyui"),
                str(partial),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"building the tiny checkpoint failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        os.replace(partial, target)
    return CHECKPOINT_NAME


def tiny_sd15_graph(
    ckpt_name: str, *, seed: int, steps: int = 4, size: int = 64, prefix: str
) -> dict[str, Any]:
    """txt2img in API format: checkpoint -> two prompts -> KSampler (euler) -> decode -> save.

    Node ids are fixed (KSAMPLER_NODE, SAVE_NODE) so tests can look for their events.
    """
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a grey cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        KSAMPLER_NODE: {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {
            "class_type": "VAEDecode",
            "inputs": {"samples": [KSAMPLER_NODE, 0], "vae": ["1", 2]},
        },
        SAVE_NODE: {
            "class_type": "SaveImage",
            "inputs": {"images": ["6", 0], "filename_prefix": prefix},
        },
    }


VAE_NAME = "comfyfleet_tiny_taesd.safetensors"
_EXTRACT_VAE = """
import sys
from safetensors import safe_open
from safetensors.torch import save_file
source, target, builder = sys.argv[1:4]
prefix = "first_stage_model."
with safe_open(source, "pt") as ckpt:
    vae = {k[len(prefix):]: ckpt.get_tensor(k) for k in ckpt.keys() if k.startswith(prefix)}
save_file(vae, target, metadata={"comfyfleet_builder_sha256": builder})
print(len(vae))
"""


def tiny_vae(installed_ws: Path) -> str:
    """The tiny checkpoint's VAE (TAESD) as a file of its own in `models/vae/`, which ComfyUI's
    VAELoader recognises by its `taesd_encoder.` / `taesd_decoder.` keys: a stand-in for graphs
    that load their VAE separately. Rebuilt with the checkpoint."""
    checkpoint = installed_ws / "models" / "checkpoints" / tiny_checkpoint(installed_ws)
    target = installed_ws / "models" / "vae" / VAE_NAME
    wanted = _builder_hash()
    with _locked(target.with_name(VAE_NAME + ".lock")):
        if target.is_file() and _metadata(target).get(BUILDER_KEY) == wanted:
            return VAE_NAME
        partial = target.with_name(VAE_NAME + ".partial")
        python = installed_ws / "venv" / "bin" / "python"
        proc = subprocess.run(
            [str(python), "-c", _EXTRACT_VAE, str(checkpoint), str(partial), wanted],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"extracting the tiny VAE failed:\n{proc.stdout}\n{proc.stderr}")
        os.replace(partial, target)
    return VAE_NAME
