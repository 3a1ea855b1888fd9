"""The torchaudio repair, run by a real interpreter against a package shaped like torchaudio's
import path (`torchaudio/_extension/utils.py`'s `_load_lib` raising OSError on a compiled
extension built for another torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from comfyfleet.provision._audio_repair import _MODULE, _MODULE_SOURCE, needs_audio_repair

_UTILS = """
def _load_lib(lib):
    if lib == "_torchaudio":
        raise OSError("Could not load this library: .../torchaudio/lib/_torchaudio.so")
    return False
"""
_EXTENSION = """
from .utils import _load_lib
AVAILABLE = _load_lib("_torchaudio")
"""
_INIT = """
from . import _extension
from .pure import resample
"""


def _fake_torchaudio(root: Path) -> Path:
    package = root / "torchaudio"
    (package / "_extension").mkdir(parents=True)
    (package / "__init__.py").write_text(_INIT, encoding="utf-8")
    (package / "pure.py").write_text("def resample(x):\n    return x[::2]\n", encoding="utf-8")
    (package / "_extension" / "__init__.py").write_text(_EXTENSION, encoding="utf-8")
    (package / "_extension" / "utils.py").write_text(_UTILS, encoding="utf-8")
    return root


def _run(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(root)},
        cwd=root,
    )


def test_without_the_repair_the_import_fails_with_the_signature(tmp_path: Path) -> None:
    root = _fake_torchaudio(tmp_path)
    done = _run(root, "import torchaudio")
    assert done.returncode == 1
    assert needs_audio_repair(done.stderr.strip().splitlines()[-1])


def test_with_the_repair_it_imports_as_without_an_extension(tmp_path: Path) -> None:
    root = _fake_torchaudio(tmp_path)
    (root / f"{_MODULE}.py").write_text(_MODULE_SOURCE, encoding="utf-8")
    code = (
        f"import {_MODULE}, torchaudio\n"
        "print(torchaudio._extension.AVAILABLE, torchaudio.resample([1, 2, 3, 4]))"
    )
    done = _run(root, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False [1, 3]"


def test_other_import_errors_are_not_repaired() -> None:
    assert not needs_audio_repair("ModuleNotFoundError: No module named 'torchaudio'")
    assert not needs_audio_repair(None)
