"""Preparing the fork server (`_zygote`) before it forks: what it imports, what it compiles,
and the checks that say whether forking from it is safe; and the process title of a child.

Standard library only, like `_zygote`, which imports it as a sibling when run as a script under
ComfyUI's Python (the supervisor's tests import it as a package module).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pkgutil
import sys
import threading
from collections.abc import Callable, Sequence
from types import CodeType, ModuleType

FORBIDDEN = frozenset({"comfy.cli_args", "comfy.model_management", "folder_paths"})
"""ComfyUI modules that parse the arguments or touch the device when imported: never here."""


# --- preloading ------------------------------------------------------------------------------
class _Guard(importlib.abc.MetaPathFinder):
    """Refuses the FORBIDDEN modules while preloading, and remembers that it did."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name in FORBIDDEN:
            self.refused.append(name)
            raise ImportError(f"{name} is imported per instance, after the fork")
        return None


def _inside(module: ModuleType, root: str) -> bool:
    return (getattr(module, "__file__", None) or "").startswith(root + os.sep)


def _submodules(name: str) -> list[str]:
    """`package.*` -> the package's modules (not imported yet); anything else -> itself."""
    if not name.endswith(".*"):
        return [name]
    package = name[:-2]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules(folders)]


def preload(names: Sequence[str], comfyui_dir: str) -> tuple[list[str], list[str]]:
    """Import each `module`, `module:attribute` (the attribute is read: lazy packages such as
    transformers load it then) or `package.*` (every module of it). A ComfyUI module whose
    import reached a forbidden one is taken out again, with every ComfyUI module that came in
    with it, so no child ever sees one that was imported half-way. Returns (loaded, skipped
    with the reason)."""
    guard = _Guard()
    sys.meta_path.insert(0, guard)
    loaded: list[str] = []
    skipped: list[str] = []
    try:
        for name in (one for pattern in names for one in _guarded(_submodules, pattern)):
            module_name, _, attribute = name.partition(":")
            before = set(sys.modules)
            guard.refused.clear()
            try:
                module = importlib.import_module(module_name)
                if attribute:
                    getattr(module, attribute)
            except Exception as exc:  # any failure only means "not preloaded"
                skipped.append(f"{name} ({type(exc).__name__}: {exc})")
            else:
                if not guard.refused:
                    loaded.append(name)
                    continue
                skipped.append(f"{name} (imports {guard.refused[0]})")
            for added in set(sys.modules) - before:
                found = sys.modules.get(added)
                if found is not None and _inside(found, comfyui_dir):
                    del sys.modules[added]
    finally:
        sys.meta_path.remove(guard)
    return loaded, skipped


_NOT_CODE = frozenset({"custom_nodes", "tests", "tests-unit", "input", "output", "models", "user"})


def compile_tree(root: str) -> dict[str, tuple[bytes, CodeType]]:
    """Every ComfyUI source file under `root`, compiled: {path: (source, code)}.

    Compiling is pure (nothing runs), so it can happen here once; where there is no bytecode
    cache on disk (a read-only tree, PYTHONDONTWRITEBYTECODE) each start otherwise compiles
    about 900 files, a third of what is left of ComfyUI's start after the preloading."""
    table: dict[str, tuple[bytes, CodeType]] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [
            d
            for d in subfolders
            if not d.startswith((".", "__")) and not (folder == root and d in _NOT_CODE)
        ]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as handle:
                        source = handle.read()
                    table[path] = (source, compile(source, path, "exec", dont_inherit=True))
                except (OSError, SyntaxError, ValueError):
                    continue
    return table


def use_compiled(table: dict[str, tuple[bytes, CodeType]]) -> None:
    """Make imports take the code compiled by :func:`compile_tree` where the file read now is
    byte for byte the one compiled (a changed file is compiled as usual)."""
    loader = importlib.machinery.SourceFileLoader
    original = loader.source_to_code

    def source_to_code(
        self: importlib.machinery.SourceFileLoader,
        data: bytes,
        path: str,
        *,
        _optimize: int = -1,
    ) -> CodeType:
        found = table.get(path)
        if found is not None and _optimize == -1 and found[0] == data:
            return found[1]
        return original(self, data, path, _optimize=_optimize)

    loader.source_to_code = source_to_code  # type: ignore[assignment,method-assign]


def warm_module_index(comfyui_dir: str) -> None:
    """Fill `inspect`'s index of module files (torch's custom-op registration, which ComfyUI
    does at start, looks a frame's module up in it, walking every loaded module the first
    time): each child then indexes only the modules it imports itself."""
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        inspect.getmodule(None, os.path.join(comfyui_dir, "<index>"))


def _guarded(expand: Callable[[str], list[str]], pattern: str) -> list[str]:
    try:
        return expand(pattern)
    except (ImportError, ValueError):  # the package itself is refused or missing
        return [pattern[:-2]]


def unsafe_to_fork() -> str | None:
    """Why forking this process would be wrong, or None. A CUDA driver already loaded cannot
    be used in a child, and a Python thread would be missing from it."""
    present = FORBIDDEN & set(sys.modules)
    if present:
        return f"{sorted(present)[0]} was imported before the fork"
    if threading.active_count() > 1:
        return f"{threading.active_count() - 1} Python threads were started while preloading"
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                if "libcuda.so" in line or "libamdhip64" in line:
                    return "a GPU driver was loaded while preloading"
    except OSError:
        pass
    return None


# --- the process title -------------------------------------------------------------------------
def set_title(argv: Sequence[str]) -> None:
    """Write `argv` over this process's own argument area, so `ps` and /proc/PID/cmdline show
    the instance's command line rather than the fork server's (the supervisor started the
    server with room for it). Longer lines are cut; the area's last byte stays NUL."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    except (OSError, IndexError, ValueError):
        return
    room = end - start
    if room <= 1:
        return
    text = b"\0".join(os.fsencode(a) for a in argv)[: room - 1]
    ctypes.memmove(start, text.ljust(room, b"\0"), room)
