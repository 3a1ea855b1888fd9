"""The workspace's virtual environment and the pip that fills it.

ComfyUI never runs in comfyfleet's own environment: it gets a venv of its own, so its many
requirements cannot clash with ours, and so `--torch existing` can see a system torch (NGC-style
images) through `--system-site-packages` without installing another.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from comfyfleet.errors import InstallError
from comfyfleet.provision._report import InstallLog, Reporter
from comfyfleet.provision._run import run_logged


def _venv_matches(venv_dir: Path, python_version: str, system_site: bool) -> bool:
    cfg = venv_dir / "pyvenv.cfg"
    if not cfg.is_file():
        return False
    values: dict[str, str] = {}
    for line in cfg.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    same_python = values.get("version", values.get("version_info", "")).startswith(python_version)
    same_site = (values.get("include-system-site-packages") == "true") == system_site
    return same_python and same_site


def interpreter_version(python: str) -> str:
    """`X.Y.Z` of an interpreter, or an InstallError naming it."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InstallError(f"python interpreter '{python}' does not run: {exc}") from exc
    version = out.stdout.strip()
    major, minor = (int(part) for part in version.split(".")[:2])
    if (major, minor) < (3, 10):
        raise InstallError(f"python {version} at {python} is too old for ComfyUI (3.10+)")
    return version


def ensure_venv(
    venv_dir: Path,
    *,
    python: str | None,
    system_site_packages: bool,
    log: InstallLog,
    reporter: Reporter,
) -> tuple[Path, str]:
    """Create the venv unless one for the same interpreter and site setting is there.

    Returns the venv's interpreter and its Python version.
    """
    base = python or sys.executable
    version = interpreter_version(base)
    venv_python = venv_dir / "bin" / "python"
    if venv_python.exists() and _venv_matches(venv_dir, version, system_site_packages):
        return venv_python, version
    if venv_dir.exists():
        reporter.info(f"recreating {venv_dir.name}/ (Python or site-packages setting changed)")
        shutil.rmtree(venv_dir)
    argv: list[str | Path] = [base, "-m", "venv"]
    if system_site_packages:
        argv.append("--system-site-packages")
    run_logged([*argv, venv_dir], log=log, reporter=reporter, what="creating the venv")
    return venv_python, version


class Pip:
    """pip inside the workspace venv. Every install goes through here, under constraints."""

    def __init__(
        self, python: Path, *, log: InstallLog, reporter: Reporter, extra_args: Iterable[str] = ()
    ) -> None:
        self.python = python
        self.log = log
        self.reporter = reporter
        self.extra_args = tuple(extra_args)

    def install(
        self,
        requirements: Iterable[str] = (),
        *,
        requirement_files: Iterable[Path] = (),
        constraints: Mapping[str, str] | None = None,
        index_url: str | None = None,
        no_deps: bool = False,
        what: str,
    ) -> list[str]:
        argv: list[str | Path] = [
            self.python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            *self.extra_args,
        ]
        if index_url:
            argv += ["--index-url", index_url]
        if no_deps:
            argv.append("--no-deps")
        if constraints:
            path = self.python.parent.parent / "comfyfleet-constraints.txt"
            path.write_text(
                "".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())), encoding="utf-8"
            )
            argv += ["-c", path]
        for file in requirement_files:
            argv += ["-r", file]
        argv += list(requirements)
        return run_logged(argv, log=self.log, reporter=self.reporter, what=what)

    def uninstall(self, names: Iterable[str], *, what: str) -> list[str]:
        argv: list[str | Path] = [self.python, "-m", "pip", "uninstall", "-y", *names]
        return run_logged(argv, log=self.log, reporter=self.reporter, what=what)

    def installed(self) -> dict[str, str]:
        """Every distribution in the venv (its own site-packages only) with its version."""
        out = subprocess.run(
            [
                self.python,
                "-m",
                "pip",
                "list",
                "--format=json",
                "--disable-pip-version-check",
                "--local",
                "--exclude-editable",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise InstallError(f"pip list failed in the venv: {out.stderr.strip()[-300:]}")
        items = json.loads(out.stdout)
        return {_normalize(item["name"]): item["version"] for item in items}

    def version_of(self, name: str) -> str | None:
        """The installed version of one distribution as the venv's Python sees it (system
        site-packages included), or None."""
        out = subprocess.run(
            [
                self.python,
                "-c",
                "import importlib.metadata as m, sys\n"
                "try: print(m.version(sys.argv[1]))\n"
                "except m.PackageNotFoundError: pass",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return out.stdout.strip() or None


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name, the lock file's key."""
    return _normalize(name)
