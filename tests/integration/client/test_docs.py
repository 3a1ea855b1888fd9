"""Every example of docs/client.md runs, as a user would run it, against the real fleet: each
is a program of its own (a fresh interpreter), in a folder with the repository's
`examples/hello.json`, reading the server from `COMFYFLEET_URL` and `COMFYFLEET_API_KEY`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.client.conftest import Fleet
from tests.integration.client.doc_examples import DOC, Block, blocks

pytestmark = pytest.mark.comfyui

EXAMPLES = blocks("python")


def test_the_document_has_its_examples() -> None:
    assert len(EXAMPLES) >= 10, f"{DOC} lost its examples"


@pytest.mark.parametrize("example", EXAMPLES, ids=[b.title for b in EXAMPLES])
def test_the_example_runs(example: Block, fleet: Fleet, tmp_path: Path) -> None:
    if example.mark == ("needs", "templates") and not fleet.has_templates:
        pytest.skip("this server has no /v1/templates routes yet (built on the templates branch)")
    (tmp_path / "examples").mkdir()
    shutil.copy(DOC.parents[1] / "examples" / "hello.json", tmp_path / "examples")
    (tmp_path / "example.py").write_text(example.code, encoding="utf-8")
    env = {
        **os.environ,
        "COMFYFLEET_URL": fleet.url,
        "COMFYFLEET_API_KEY": fleet.keys["user"],
        "COMFYFLEET_WEBHOOK_SECRET": fleet.secret,
    }
    run = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(run.stdout)  # shown with -s, and beside a failure
    assert run.returncode == 0, f"{example.title} failed:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip(), f"{example.title} printed nothing"
    assert "Traceback" not in run.stderr
