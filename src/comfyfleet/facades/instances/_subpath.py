"""Opening an instance's editor under `/instances/{i}/` with the frontend releases whose router
ignores the folder the page was opened from.

Frontend releases 1.32.2 up to the upstream fix (ComfyUI 0.3.75 pins 1.32.9) create their router
with the base `./`, which the router reads as `/.`: every page path but `/` matches no route, and
the editor under a prefix stays blank (its API calls already follow the page's folder). For those
releases the entry script is answered with the router's base set to the page's folder, which is
what the fixed releases do themselves; a release without the pattern passes unchanged.
"""

from __future__ import annotations

import re

_ENTRY_SCRIPT = re.compile(rb"^/assets/index-[A-Za-z0-9_-]+\.js$")
_ROUTER_BASE = b"createWebHistory(basePath)"
_PAGE_FOLDER = b'createWebHistory(window.location.pathname.replace(/[^/]*$/,""))'


def may_need_router_base(method: str, path: bytes) -> bool:
    """Whether the answer to this request may be an entry script to rewrite (read whole)."""
    return method == "GET" and _ENTRY_SCRIPT.match(path) is not None


def with_router_base(script: bytes) -> bytes:
    """The script with its router based on the page's folder, when it is a release that needs
    it; else the script as it was."""
    return script.replace(_ROUTER_BASE, _PAGE_FOLDER, 1)
