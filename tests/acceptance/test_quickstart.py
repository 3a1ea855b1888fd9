"""The README's quickstart, run as a user runs it, on a fresh workspace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.fleet import comfyui_processes

ROOT = Path(__file__).resolve().parents[2]


def quickstart_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart -->\s*```bash\n(.+?)\n```", readme, re.S)
    assert match, "README has no quickstart block"
    return match.group(1).strip()


@pytest.mark.comfyui
def test_the_readme_quickstart_installs_and_runs(tmp_path_factory: pytest.TempPathFactory) -> None:
    ws = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "COMFYFLEET_WORKSPACE": str(ws), "COLUMNS": "200", "NO_COLOR": "1"}
    try:
        done = subprocess.run(
            ["bash", "-c", quickstart_command()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        lines = done.stdout.splitlines()
        succeeded = [line for line in lines if line.startswith("✓ job ")]
        assert succeeded and succeeded[0].split()[3] == "succeeded", done.stdout[-2000:]
        job_id = succeeded[0].split()[2]
        image = Path(lines[lines.index(succeeded[0]) + 1].strip())
        assert image == Path("outputs") / job_id / "hello_00001_.png"
        assert (ROOT / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        shutil.rmtree(ROOT / "outputs", ignore_errors=True)
    assert comfyui_processes(ws) == []
