"""`comfyfleet install`: the steps in order, each skipped when its inputs did not change.

The workspace is marked installed (`state/installed.json`) only after every step succeeded and the
lock file is written; the mark is removed before the first step, so a failed or interrupted install
never looks installed. Re-running with the same inputs finds the same fingerprint and returns at
once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfleet import __version__
from comfyfleet.errors import LockError
from comfyfleet.gpus import Platform, detect_platform
from comfyfleet.provision._fetch import FetchedSource, install_source
from comfyfleet.provision._lock import (
    ComfyUILock,
    Lock,
    NodeLock,
    TorchLock,
    diff_locks,
    read_lock,
    write_lock,
)
from comfyfleet.provision._node_list import own_nodes_file
from comfyfleet.provision._node_sets import nodes_to_install
from comfyfleet.provision._nodes import InstalledNode, NodeSpec, install_nodes
from comfyfleet.provision._python_env import check_torchvision, comfy_requirements, install_torch
from comfyfleet.provision._releases import pin_release
from comfyfleet.provision._report import InstallLog, Reporter
from comfyfleet.provision._settings import InstallSettings
from comfyfleet.provision._sources import SourceSpec, parse_source
from comfyfleet.provision._torch import TorchPlan, select_torch
from comfyfleet.provision._tree import tree_signature
from comfyfleet.provision._venv import Pip, ensure_venv, interpreter_version
from comfyfleet.workspace import Workspace, write_extra_model_paths

_NOT_PACKAGES = frozenset({"pip", "setuptools", "wheel"})


def default_cache_dir() -> Path:
    """`COMFYFLEET_CACHE_DIR`, else `$XDG_CACHE_HOME/comfyfleet`, else `~/.cache/comfyfleet`."""
    explicit = os.environ.get("COMFYFLEET_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyfleet"


@dataclass(frozen=True)
class InstallResult:
    workspace: Workspace
    lock: Lock
    up_to_date: bool
    changes: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class _Inputs:
    source: SourceSpec
    plan: TorchPlan
    nodes: list[NodeSpec]
    python_version: str
    locked: Lock | None


def _fingerprint(settings: InstallSettings, inputs: _Inputs, ws: Workspace) -> str:
    """Everything an install depends on; equal fingerprints mean nothing to do."""
    data: dict[str, Any] = {
        "comfyfleet": __version__,
        "source": str(inputs.source),
        "torch": [inputs.plan.variant, list(inputs.plan.requirements), inputs.plan.index_url],
        "python": [settings.python, inputs.python_version],
        "pip_args": list(settings.pip_args),
        "repair": settings.repair_torchvision,
        # a requirements file only when named, so that lists without one keep their fingerprint
        "nodes": [
            [n.name, n.kind, n.location, n.ref, *([n.requirements] if n.requirements else [])]
            for n in inputs.nodes
        ],
        "locked": inputs.locked.to_json() if inputs.locked else None,
        "models": [str(ws.models_dir), sorted(ws.model_folders.items())],
    }
    if inputs.source.kind == "path":
        data["source_tree"] = tree_signature(Path(inputs.source.location))
    data["node_trees"] = [
        tree_signature(Path(n.location)) for n in inputs.nodes if n.kind == "path"
    ]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _resolve_inputs(
    settings: InstallSettings,
    ws: Workspace,
    locked: bool,
    platform: Platform | None,
    reporter: Reporter,
) -> _Inputs:
    python_version = interpreter_version(settings.python or sys.executable)
    nodes = nodes_to_install(own_nodes_file(settings.nodes_file, ws), settings.node_sets)
    if locked:
        lock = read_lock(ws.lock_file)
        if lock.python.rsplit(".", 1)[0] != python_version.rsplit(".", 1)[0]:
            raise LockError(
                f"the lock was made with Python {lock.python}, this is {python_version}",
                hint="use install.python to pick the same interpreter",
            )
        plan = TorchPlan(
            choice=lock.torch.choice,
            variant=lock.torch.variant,
            requirements=()
            if lock.torch.system_site_packages
            else (f"torch=={lock.torch.version}",),
            index_url=lock.torch.index_url,
            system_site_packages=lock.torch.system_site_packages,
            warnings=(),
        )
        source = parse_source(lock.comfyui.source, version=settings.comfyui_version)
        return _Inputs(source, plan, nodes, python_version, lock)
    plan = select_torch(
        settings.torch,
        platform or detect_platform(),
        index_base=settings.torch_index_url,
    )
    for warning in plan.warnings:
        reporter.warn(warning)
    source = parse_source(settings.source, version=settings.comfyui_version)
    if source.kind == "git" and source.ref is None:
        source = pin_release(source)
        reporter.info(f"the latest ComfyUI release of {source.location} is {source.ref}")
    return _Inputs(source, plan, nodes, python_version, None)


def _read_marker(ws: Workspace) -> dict[str, Any]:
    try:
        data = json.loads(ws.installed_marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def install(
    settings: InstallSettings,
    ws: Workspace,
    *,
    reporter: Reporter,
    locked: bool = False,
    platform: Platform | None = None,
    cache_dir: Path | None = None,
) -> InstallResult:
    """Install (or bring up to date) workspace `ws` as the `install` settings say."""
    started = time.monotonic()
    ws.prepare()
    write_extra_model_paths(
        ws.extra_model_paths, ws.models_dir, ws.custom_nodes_dir, ws.model_folders
    )
    inputs = _resolve_inputs(settings, ws, locked, platform, reporter)
    fingerprint = _fingerprint(settings, inputs, ws)
    if (
        _read_marker(ws).get("fingerprint") == fingerprint
        and ws.is_installed
        and ws.lock_file.is_file()
    ):
        return InstallResult(ws, read_lock(ws.lock_file), True, (), time.monotonic() - started)
    ws.installed_marker.unlink(missing_ok=True)
    previous = read_lock(ws.lock_file) if ws.lock_file.is_file() and not locked else None
    with InstallLog(ws.install_log) as log:
        log.write(f"=== comfyfleet {__version__} install into {ws.root} (locked={locked})")
        lock = _run_steps(settings, ws, inputs, log, reporter, cache_dir or default_cache_dir())
        if inputs.locked is not None:
            drift = diff_locks(inputs.locked, lock)
            if drift:
                raise LockError(
                    "the environment drifted from comfyfleet.lock: " + "; ".join(drift[:8]),
                    hint=f"{len(drift)} differences, full list in {ws.install_log}",
                ) from None
        changes = tuple(diff_locks(previous, lock)) if previous else ()
        for line in changes:
            log.write(f"lock change: {line}")
        write_lock(ws.lock_file, lock)
        marker = {
            "fingerprint": fingerprint,
            "installed_at": time.time(),
            "comfyui_version": lock.comfyui.version,
            "torch": lock.torch.version,
        }
        ws.installed_marker.write_text(json.dumps(marker, indent=2), encoding="utf-8")
        log.write("=== install complete")
    return InstallResult(ws, lock, False, changes, time.monotonic() - started)


def _run_steps(
    settings: InstallSettings,
    ws: Workspace,
    inputs: _Inputs,
    log: InstallLog,
    reporter: Reporter,
    cache_dir: Path,
) -> Lock:
    plan, pinned = inputs.plan, inputs.locked.packages if inputs.locked else None
    with reporter.step("Python environment"):
        venv_python, python_version = ensure_venv(
            ws.venv_dir,
            python=settings.python,
            system_site_packages=plan.system_site_packages,
            log=log,
            reporter=reporter,
        )
    pip = Pip(venv_python, log=log, reporter=reporter, extra_args=settings.pip_args)
    with reporter.step(f"ComfyUI from {inputs.source}"):
        fetched, _ = install_source(
            inputs.source,
            ws.comfyui_dir,
            cache_dir=cache_dir,
            pip_python=venv_python,
            log=log,
            reporter=reporter,
        )
    if inputs.locked is not None and fetched.sha256 != inputs.locked.comfyui.sha256:
        raise LockError(
            f"ComfyUI from {inputs.source} does not match the lock (sha256 "
            f"{fetched.sha256[:12]}, locked {inputs.locked.comfyui.sha256[:12]})"
        )
    with reporter.step(f"torch ({plan.variant})"):
        torch_version, pins = install_torch(pip, plan, reporter, locked=pinned)
    constraints = {**(pinned or {}), **pins}
    with reporter.step("ComfyUI requirements"):
        requirements = comfy_requirements(ws.comfyui_dir, ws.venv_dir / "comfyui-requirements.txt")
        pip.install(
            requirement_files=[requirements],
            constraints=constraints,
            what="installing ComfyUI's requirements",
        )
    nodes: list[InstalledNode] = []
    if inputs.nodes:
        with reporter.step(f"custom nodes ({len(inputs.nodes)})"):
            commits = (
                {n.name: n.commit for n in inputs.locked.custom_nodes} if inputs.locked else None
            )
            nodes = install_nodes(
                inputs.nodes,
                ws.custom_nodes_dir,
                pip=pip,
                constraints=constraints,
                parking=ws.state_dir / "removed-nodes",
                log=log,
                reporter=reporter,
                locked_commits=commits,
            )
    with reporter.step("checking torch and torchvision"):
        repairs = check_torchvision(pip, reporter, allow_repair=settings.repair_torchvision)
    return _make_lock(fetched, python_version, plan, torch_version, pip, nodes, repairs)


def _make_lock(
    fetched: FetchedSource,
    python_version: str,
    plan: TorchPlan,
    torch_version: str,
    pip: Pip,
    nodes: list[InstalledNode],
    repairs: tuple[str, ...],
) -> Lock:
    packages = {n: v for n, v in pip.installed().items() if n not in _NOT_PACKAGES}
    if plan.system_site_packages:
        packages.pop("torch", None)
    return Lock(
        comfyui=ComfyUILock(fetched.spec, fetched.version, fetched.sha256, fetched.commit),
        python=python_version,
        torch=TorchLock(
            plan.choice, plan.variant, torch_version, plan.index_url, plan.system_site_packages
        ),
        packages=packages,
        custom_nodes=tuple(NodeLock(n.name, n.source, n.ref, n.commit, n.sha256) for n in nodes),
        repairs=repairs,
    )
