"""axe-core, the accessibility engine, installed from the npm registry into the test cache (keyed
by version, once per machine) and run inside a page of the real browser.

The script is evaluated through the browser's DevTools protocol, which a page's
Content-Security-Policy does not govern, so the pages are checked as they are served.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from typing import Any

from playwright.sync_api import Page

from tests.comfyui_env import cache_root

AXE_VERSION = "4.14.1"
SERIOUS = frozenset({"serious", "critical"})
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def axe_script() -> str:
    """axe.min.js of `AXE_VERSION`, installed with npm on first use (`.ci/run` installs npm)."""
    target = cache_root() / f"axe-core-{AXE_VERSION}"
    script = target / "node_modules" / "axe-core" / "axe.min.js"
    if script.is_file():
        return script.read_text(encoding="utf-8")
    npm = shutil.which("npm")
    assert npm is not None, "the accessibility checks need npm: apt-get install npm"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not script.is_file():
            staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            argv = [npm, "install", "--prefix", str(staging), f"axe-core@{AXE_VERSION}"]
            argv += ["--no-audit", "--no-fund", "--loglevel=error"]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"npm install axe-core failed: {result.stderr[-1500:]}"
            staging.rename(target)
    return script.read_text(encoding="utf-8")


def serious_violations(page: Page, source: str) -> list[dict[str, Any]]:
    """axe's WCAG 2 A/AA violations of impact serious or critical on the page as it is now,
    each as `{id, impact, help, nodes: [target, ...]}`."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    result: dict[str, Any] = page.evaluate(
        """async (tags) => await axe.run(document, {
            runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'],
        })""",
        TAGS,
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v.get("impact") in SERIOUS
    ]
