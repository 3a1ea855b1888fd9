"""`comfyfleet nodes list|add|remove`: the custom nodes of an installed workspace, one at a time.

`add` pins what it adds: the ref a user gives (branch, tag, or nothing for the default branch)
is resolved to its commit before anything is written, and the list records that commit, so
the next install, here or on another machine, gets the same tree. Only the node itself is
fetched and its requirements installed (under the lock's torch pins); the rest of the install
is left alone. `remove` moves the folder aside, as install does with a folder it does not know,
so a removal can be undone by hand. Both keep `comfyfleet.lock` in step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from comfyfleet.errors import CustomNodeError
from comfyfleet.provision._lock import Lock, NodeLock, read_lock, write_lock
from comfyfleet.provision._node_list import list_path, own_nodes_file, read_list, write_list
from comfyfleet.provision._node_sets import merge_nodes, node_set
from comfyfleet.provision._nodes import (
    InstalledNode,
    NodeSpec,
    install_node,
    installed_node,
    load_nodes_file,
    park,
    parse_nodes,
)
from comfyfleet.provision._report import InstallLog, Reporter
from comfyfleet.provision._settings import InstallSettings
from comfyfleet.provision._tree import tree_signature
from comfyfleet.provision._venv import Pip
from comfyfleet.workspace import Workspace

FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PINNED_PACKAGES = ("torch", "torchvision", "torchaudio")


@dataclass(frozen=True)
class NodeRow:
    """One line of `nodes list`."""

    name: str
    source: str
    origin: str
    """'list', 'set NAME', or 'not listed' (a folder the next install will remove)."""
    pinned: str | None
    installed: str | None
    """The installed commit (git) or content hash (folder), None when not installed."""
    state: str


def split_ref(text: str) -> tuple[str, str | None]:
    """`URL@REF` into its parts. An `@` before the last `/` belongs to the URL (user@host)."""
    head, sep, tail = text.rpartition("@")
    if sep and head and tail and "/" not in tail and ":" not in tail:
        return head, tail
    return text, None


def resolve_commit(url: str, ref: str | None) -> str:
    """The commit `ref` (branch or tag; None: the default branch) of `url` names now."""
    if ref is not None and FULL_COMMIT.match(ref.lower()):
        return ref.lower()
    git = shutil.which("git")
    if git is None:
        raise CustomNodeError("git is not installed", hint="install git to add custom nodes")
    try:
        out = subprocess.run(
            [git, "ls-remote", url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except subprocess.TimeoutExpired as exc:
        raise CustomNodeError(f"{url} did not answer within 120 s") from exc
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"git exited {out.returncode}"
        raise CustomNodeError(f"cannot read the repository {url}: {reason}", hint="check the URL")
    refs: dict[str, str] = {}
    for line in out.stdout.splitlines():
        commit, _, refname = line.partition("\t")
        refs[refname.strip()] = commit
    want = ref or "HEAD"
    for name in (f"refs/tags/{want}^{{}}", f"refs/tags/{want}", f"refs/heads/{want}", want):
        if name in refs:
            return refs[name]
    if re.fullmatch(r"[0-9a-fA-F]{4,39}", want):
        raise CustomNodeError(
            f"'{want}' looks like an abbreviated commit", hint="give the full 40-character id"
        )
    raise CustomNodeError(f"{url} has no branch or tag '{want}'")


def _with_node(
    lock: Lock, node: InstalledNode | None, name: str, packages: dict[str, str] | None
) -> Lock:
    kept = [n for n in lock.custom_nodes if n.name != name]
    if node is not None:
        kept.append(NodeLock(node.name, node.source, node.ref, node.commit, node.sha256))
    return replace(
        lock,
        custom_nodes=tuple(kept),
        packages=lock.packages if packages is None else packages,
    )


def _spec_for(source: str, ref: str | None, name: str | None, requirements: str | None) -> NodeSpec:
    """What the user named: a folder on this machine, or a git URL pinned to its commit."""
    folder = Path(source).expanduser()
    entry: dict[str, str] = {}
    if folder.is_dir() and ref is None:
        entry["path"] = str(folder.resolve())
    else:
        url, given = split_ref(source)
        entry.update(git=url, ref=resolve_commit(url, ref or given))
    if name is not None:
        entry["name"] = name
    if requirements is not None:
        entry["requirements"] = requirements
    (spec,) = parse_nodes({"nodes": [entry]}, Path.cwd() / "(command line)")
    return spec


def add_node(
    settings: InstallSettings,
    ws: Workspace,
    source: str,
    *,
    reporter: Reporter,
    ref: str | None = None,
    name: str | None = None,
    requirements: str | None = None,
) -> tuple[NodeSpec, InstalledNode, Path]:
    """Pin, install and list one node; returns its spec, what was installed, and the list."""
    ws.require_installed()
    path = list_path(settings.nodes_file, ws)
    specs = read_list(path)
    spec = _spec_for(source, ref, name, requirements)
    if any(s.name == spec.name for s in specs):
        raise CustomNodeError(
            f"'{spec.name}' is already in the nodes list {path}",
            hint="remove it first, or give another --name",
        )
    lock = read_lock(ws.lock_file)
    folder = ws.custom_nodes_dir / spec.name
    if folder.exists() and installed_node(folder) is None:
        target = park(folder, ws.state_dir / "removed-nodes")
        reporter.warn(f"moved the folder '{spec.name}' that comfyfleet did not install to {target}")
    pins = {n: lock.packages[n] for n in _PINNED_PACKAGES if n in lock.packages}
    with InstallLog(ws.install_log) as log:
        log.write(f"=== comfyfleet nodes add {spec.name} ({spec.location}@{spec.ref})")
        pip = Pip(ws.python, log=log, reporter=reporter, extra_args=settings.pip_args)
        with reporter.step(f"custom node '{spec.name}'"):
            node = install_node(
                spec, ws.custom_nodes_dir, pip=pip, constraints=pins, log=log, reporter=reporter
            )
        has_requirements = (folder / (spec.requirements or "requirements.txt")).is_file()
        packages = pip.installed() if has_requirements else None
    write_list(path, [*specs, spec])
    write_lock(ws.lock_file, _with_node(lock, node, spec.name, packages))
    return spec, node, path


def remove_node(
    settings: InstallSettings, ws: Workspace, name: str, *, reporter: Reporter
) -> tuple[bool, Path | None]:
    """Take `name` off the list and out of `custom_nodes/`; returns whether the list named it
    and where the folder went (None when it was not on disk)."""
    path = list_path(settings.nodes_file, ws)
    specs = read_list(path)
    listed = any(s.name == name for s in specs)
    folder = ws.custom_nodes_dir / name
    if not listed:
        for set_name in settings.node_sets:
            if any(s.name == name for s in node_set(set_name).nodes):
                raise CustomNodeError(
                    f"'{name}' comes from the node set '{set_name}' of the settings",
                    hint="take the set out of install.node_sets, or list the nodes you want",
                )
        if not folder.exists():
            known = ", ".join(s.name for s in specs) or "none"
            raise CustomNodeError(f"no custom node '{name}' (listed: {known})")
    if listed:
        write_list(path, [s for s in specs if s.name != name])
        for set_name in settings.node_sets:
            if any(s.name == name for s in node_set(set_name).nodes):
                reporter.warn(
                    f"the node set '{set_name}' carries '{name}' too: the next install "
                    "puts the set's pin back"
                )
    moved = park(folder, ws.state_dir / "removed-nodes") if folder.exists() else None
    if moved is not None:
        reporter.info(f"moved {folder} to {moved}")
    if ws.lock_file.is_file():
        lock = read_lock(ws.lock_file)
        write_lock(ws.lock_file, _with_node(lock, None, name, None))
    return listed, moved


def _state(spec: NodeSpec, node: InstalledNode | None) -> str:
    if node is None:
        return "not installed"
    if node.source != spec.location:
        return f"installed from another source ({node.source})"
    if spec.kind == "path":
        folder = Path(spec.location)
        if not folder.is_dir():
            return "installed (its source folder is gone)"
        same = node.signature == tree_signature(folder)
        return "installed" if same else "source folder changed since the install"
    if spec.ref is not None and FULL_COMMIT.match(spec.ref):
        return "installed" if node.commit == spec.ref else "differs from the pin"
    return "installed" if node.ref == spec.ref else "differs from the list"


def node_rows(settings: InstallSettings, ws: Workspace) -> list[NodeRow]:
    """Every node the settings want, then every other folder in `custom_nodes/`."""
    own_file = own_nodes_file(settings.nodes_file, ws)
    own = load_nodes_file(own_file) if own_file is not None else []
    origin = {spec.name: "list" for spec in own}
    sets = []
    for set_name in settings.node_sets:
        specs = node_set(set_name).nodes
        sets.append(specs)
        for spec in specs:
            origin.setdefault(spec.name, f"set {set_name}")
    rows: list[NodeRow] = []
    for spec in merge_nodes(sets, own):
        node = installed_node(ws.custom_nodes_dir / spec.name)
        installed = None if node is None else (node.commit or node.sha256[:12])
        rows.append(
            NodeRow(
                spec.name, spec.location, origin[spec.name], spec.ref, installed, _state(spec, node)
            )
        )
    wanted = {row.name for row in rows}
    folders = sorted(ws.custom_nodes_dir.iterdir()) if ws.custom_nodes_dir.is_dir() else []
    for folder in folders:
        if (
            folder.name in wanted
            or folder.name == "__pycache__"
            or folder.name.endswith((".partial", ".old"))
        ):
            continue
        node = installed_node(folder)
        rows.append(
            NodeRow(
                folder.name,
                node.source if node is not None else str(folder),
                "not listed",
                None,
                None if node is None else (node.commit or node.sha256[:12]),
                "the next install removes it" if node else "the next install moves it aside",
            )
        )
    return rows
