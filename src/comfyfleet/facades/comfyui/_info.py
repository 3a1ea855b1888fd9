"""What the ComfyUI API tells of the server, told of the whole fleet from the registry:
`/object_info` (every serving instance's nodes), `/system_stats` (this gateway's machine, and
every instance's devices), `/embeddings`, `/models`, `/models/{folder}` (the files on the
agents' disks), `/features`; and `POST /free`, passed on to every serving instance.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import sys
from typing import Any

import httpx
import psutil

from comfyfleet import __version__
from comfyfleet.gateway import ApiError, Service
from comfyfleet.jobs import Fleet

log = logging.getLogger("comfyfleet.gateway")


async def object_info(service: Service) -> dict[str, Any]:
    if service.node_types is None:
        return {}
    return await service.node_types.object_info()


def system_stats(fleet: Fleet) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    serving = fleet.serving()
    versions: dict[str, Any] = {}
    devices: list[dict[str, Any]] = []
    for instance in serving:
        stats = instance.details.get("system_stats")
        stats = stats if isinstance(stats, dict) else {}
        if not versions and isinstance(stats.get("system"), dict):
            versions = dict(stats["system"])
        listed = [d for d in stats.get("devices") or [] if isinstance(d, dict)]
        if not listed:
            listed = [_device_of(instance.device, instance.vram_used, instance.vram_total)]
        for device in listed:
            devices.append({**device, "instance": instance.index, "agent": instance.agent})
    system = {
        "os": versions.get("os", sys.platform),
        "ram_total": memory.total,
        "ram_free": memory.available,
        "comfyui_version": versions.get("comfyui_version", "unknown"),
        "python_version": versions.get("python_version", sys.version),
        "pytorch_version": versions.get("pytorch_version", "unknown"),
        "embedded_python": False,
        "argv": ["comfyfleet"],
        "comfyfleet_version": __version__,
        "hostname": platform.node(),
        "instances_serving": len(serving),
    }
    return {"system": system, "devices": devices}


def _device_of(name: str, used: int | None, total: int | None) -> dict[str, Any]:
    free = total - used if total is not None and used is not None else 0
    kind = name.split(":", 1)[0] if name else "cpu"
    return {
        "name": name or "cpu",
        "type": kind,
        "index": 0,
        "vram_total": total or 0,
        "vram_free": free,
        "torch_vram_total": total or 0,
        "torch_vram_free": free,
    }


def model_files(fleet: Fleet) -> dict[str, list[str]]:
    """Folder type -> the files any alive agent has, sorted."""
    merged: dict[str, set[str]] = {}
    for instance in fleet.instances:
        if instance.agent not in fleet.alive:
            continue
        for folder, names in instance.models.items():
            merged.setdefault(folder, set()).update(names)
    return {folder: sorted(names) for folder, names in sorted(merged.items())}


def embeddings(fleet: Fleet) -> list[str]:
    """Embedding names as ComfyUI lists them: without their extension."""
    return [name.rsplit(".", 1)[0] for name in model_files(fleet).get("embeddings", [])]


def folder_files(fleet: Fleet, folder: str) -> list[str]:
    files = model_files(fleet)
    if folder not in files:
        raise ApiError(404, "unknown_folder", f"no model folder '{folder}'")
    return files[folder]


def features(max_upload_bytes: int) -> dict[str, Any]:
    return {"supports_preview_metadata": True, "max_upload_size": max_upload_bytes}


async def free(fleet: Fleet, body: dict[str, Any]) -> int:
    """`POST /free` on every serving instance this gateway can reach; the number that took it.
    (Instances of agents on other machines listen on their own loopback: they free memory
    through their agent's idle policy instead.)"""
    wanted = {k: bool(body.get(k)) for k in ("unload_models", "free_memory")}

    async def one(client: httpx.AsyncClient, url: str) -> bool:
        try:
            return (await client.post(f"{url}/free", json=wanted)).status_code == 200
        except httpx.HTTPError as exc:
            log.info("POST /free to %s failed: %s", url, exc)
            return False

    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        done = await asyncio.gather(*(one(client, i.base_url) for i in fleet.serving()))
    return sum(done)
