"""comfyfleet's runtime extension, loaded by every ComfyUI instance comfyfleet starts.

It runs inside ComfyUI (its own interpreter and venv), so it imports nothing from comfyfleet.

Why it exists: after a prompt, ComfyUI calls `gc.collect()` (after the first prompt, then at most
every 10 s). A full collection walks every object the process holds, about half a million
once torch and the node packs are imported, which stalls the instance for a few hundred
milliseconds between two jobs. Objects created while starting up live as long as the process,
so moving them to the permanent generation with `gc.freeze()` loses nothing and makes those
collections walk only what the prompts created. Frozen once when this module loads (after the
core nodes) and once more when the server starts (after every custom node).

Set COMFYFLEET_GC_FREEZE=0 in the instance's environment to leave the collector alone.

It also keeps each job to its own files (`confine`): the node that cleans computed output
prefixes, and the guard on ComfyUI's annotated file lookups (COMFYFLEET_CONFINE_PATHS=0 turns the
guard off, for a trusted single-user instance).
"""

from __future__ import annotations

import gc
import os

from .confine import ComfyfleetJobPrefix, guard_annotated_paths

NODE_CLASS_MAPPINGS: dict[str, type] = {"ComfyfleetJobPrefix": ComfyfleetJobPrefix}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"ComfyfleetJobPrefix": "Job output prefix"}


def _enabled(variable: str) -> bool:
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no")


def _guard_paths() -> None:
    try:
        import folder_paths  # type: ignore[import-not-found]  # ComfyUI's own
    except ImportError:
        return
    guard_annotated_paths(folder_paths)


def _freeze() -> None:
    gc.collect()
    gc.freeze()


def _register_startup_freeze() -> None:
    try:
        import server  # type: ignore[import-not-found]  # ComfyUI's own, only inside ComfyUI
    except ImportError:
        return
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    app = getattr(instance, "app", None)
    if app is None:
        return

    async def freeze_on_startup(_app: object) -> None:
        _freeze()

    app.on_startup.append(freeze_on_startup)


if _enabled("COMFYFLEET_CONFINE_PATHS"):
    _guard_paths()
if _enabled("COMFYFLEET_GC_FREEZE"):
    _freeze()
    _register_startup_freeze()
