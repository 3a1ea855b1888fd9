"""Repairing a torchvision wheel that was built against another torch.

Some package indexes carry only a CUDA build of torchvision for a given torch release. On a CPU
torch its compiled ops cannot load (they link against CUDA libraries); torchvision copes with that,
except that `torchvision/_meta_registrations.py` registers fake kernels for `torchvision::nms` and
`torchvision::qnms` unconditionally and dies with "operator torchvision::nms does not exist".
ComfyUI imports torchvision at start, so the whole server fails.

The repair is a small module, loaded by a `.pth` file, that on the first `import torchvision`
tries to load the compiled ops and, only when that fails, declares those two operator schemas (no
kernels). Everything pure-Python in torchvision then works; its compiled ops raise as they would
without the repair. The installer applies it only after seeing that exact failure, says so, records
it in the lock file, and `comfyfleet doctor` reports it.
"""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

REPAIR_NAME = "torchvision-missing-ops-schema"
_MODULE = "comfyfleet_torchvision_repair"
_SIGNATURE = "torchvision::nms does not exist"

_MODULE_SOURCE = '''"""Installed by comfyfleet: lets a mismatched torchvision import."""
import importlib.abc
import importlib.machinery
import os
import sys

_kept = []


def _declare_missing_ops():
    spec = importlib.machinery.PathFinder.find_spec("torchvision", sys.path)
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    folder = next(iter(spec.submodule_search_locations))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        compiled = os.path.join(folder, "_C" + suffix)
        if not os.path.exists(compiled):
            continue
        try:
            torch.ops.load_library(compiled)
            return
        except OSError:
            break
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _kept.append(library)


class _FirstImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            _declare_missing_ops()
        except Exception as exc:
            sys.stderr.write("comfyfleet torchvision repair: %r\\n" % (exc,))
        return None


if not any(type(f).__name__ == "_FirstImport" for f in sys.meta_path):
    sys.meta_path.insert(0, _FirstImport())
'''


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Path(out.stdout.strip() or sysconfig.get_paths()["purelib"])


def import_error(python: Path, module: str) -> str | None:
    """None when `import <module>` works in the venv, else the last line of its error."""
    out = subprocess.run(
        [str(python), "-c", f"import {module}"], capture_output=True, text=True, timeout=300
    )
    if out.returncode == 0:
        return None
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {out.returncode}"


def torchvision_import_error(python: Path) -> str | None:
    return import_error(python, "torchvision")


def needs_repair(error: str | None) -> bool:
    return error is not None and _SIGNATURE in error


def apply_repair(python: Path) -> Path:
    """Install the repair module and its `.pth` into the venv; returns the module's path."""
    site = site_packages(python)
    module = site / f"{_MODULE}.py"
    module.write_text(_MODULE_SOURCE, encoding="utf-8")
    (site / f"{_MODULE}.pth").write_text(f"import {_MODULE}\n", encoding="utf-8")
    return module


def repair_installed(python: Path) -> bool:
    return (site_packages(python) / f"{_MODULE}.pth").is_file()
