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
"""

from __future__ import annotations

import gc
import os

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


def _enabled() -> bool:
    return os.environ.get("COMFYFLEET_GC_FREEZE", "1").strip().lower() not in ("0", "false", "no")


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


if _enabled():
    _freeze()
    _register_startup_freeze()
