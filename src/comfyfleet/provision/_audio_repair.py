"""Running a torchaudio release built for an older torch, when the index has none for this one.

torchaudio's releases stopped following torch's (an index may carry torch 2.13 and torchaudio up
to 2.11), while newer ComfyUI imports torchaudio at start (its audio VAE module), so without one
the server does not start at all. The newest torchaudio not newer than the installed torch is
then installed without its dependencies (it pins its own torch). Its Python code works on the
newer torch; its compiled extension usually does not load (it links against the torch it was
built for), and torchaudio raises on that at import. The repair is a small module, loaded by a
`.pth` file, that makes torchaudio treat an extension that fails to load as an absent one, which
torchaudio supports (its compiled-only functions then raise when called). The installer applies it
only after seeing that failure, says so, records it in the lock file, and `comfyfleet doctor`
reports it.
"""

from __future__ import annotations

from pathlib import Path

from comfyfleet.provision._repair import import_error, site_packages

AUDIO_REPAIR_NAME = "torchaudio-from-older-torch"
_MODULE = "comfyfleet_torchaudio_repair"
_SIGNATURE = "Could not load this library"

_MODULE_SOURCE = '''"""Installed by comfyfleet: lets a torchaudio built for another torch import
without its compiled extension."""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "torchaudio._extension.utils"


def _tolerant(load_lib):
    def load(lib):
        try:
            return load_lib(lib)
        except OSError:
            return False

    return load


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        module._load_lib = _tolerant(module._load_lib)


class _ExtensionUtils(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


if not any(type(f).__name__ == "_ExtensionUtils" for f in sys.meta_path):
    sys.meta_path.insert(0, _ExtensionUtils())
'''


def torchaudio_import_error(python: Path) -> str | None:
    return import_error(python, "torchaudio")


def needs_audio_repair(error: str | None) -> bool:
    return error is not None and _SIGNATURE in error and "torchaudio" in error


def apply_audio_repair(python: Path) -> Path:
    """Install the repair module and its `.pth` into the venv; returns the module's path."""
    site = site_packages(python)
    module = site / f"{_MODULE}.py"
    module.write_text(_MODULE_SOURCE, encoding="utf-8")
    (site / f"{_MODULE}.pth").write_text(f"import {_MODULE}\n", encoding="utf-8")
    return module


def remove_audio_repair(python: Path) -> None:
    site = site_packages(python)
    for suffix in (".pth", ".py"):
        (site / f"{_MODULE}{suffix}").unlink(missing_ok=True)


def audio_repair_installed(python: Path) -> bool:
    return (site_packages(python) / f"{_MODULE}.pth").is_file()
