"""`TemplateLibrary`: the shipped templates, then each folder's, the later winning on a name.

A file that does not load is listed as broken (with the file and the key) and the others still
work; where a broken file would have replaced a template of the same name, the earlier one
stays. The library reads its folders again when their files change (`refresh`), so a template
dropped into `templates/` is there for the next request without a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from comfyfleet.templates._errors import TemplateError, TemplateFileError, TemplateNotFound
from comfyfleet.templates._load import SUFFIXES, load_template, shipped_templates
from comfyfleet.templates._model import Template

_Signature = tuple[tuple[str, bool, tuple[tuple[str, int, int], ...]], ...]


@dataclass(frozen=True)
class BrokenTemplate:
    """A file that did not load: `path` where it is, `message` what is wrong, naming the key."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """As API answers show it: the file's name (no server path) and the error."""
        return {"file": Path(self.path).name, "error": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TemplateLibrary:
    """Templates by name: shipped ones first (unless `shipped=False`), then every folder in
    order (the workspace's `templates/`, then `templates.folders`). A folder that does not
    exist is listed as broken, unless it is one of `optional` (the workspace's own)."""

    def __init__(
        self, folders: Iterable[Path] = (), *, shipped: bool = True, optional: Iterable[Path] = ()
    ) -> None:
        self.folders = tuple(Path(f) for f in folders)
        self._optional = frozenset(Path(f) for f in optional)
        self._shipped = shipped_templates() if shipped else []
        self._templates: dict[str, Template] = {}
        self._broken: list[BrokenTemplate] = []
        self._signature: _Signature = ()
        self.reload()

    @classmethod
    def for_workspace(
        cls, workspace_root: Path, configured: Sequence[Path] = ()
    ) -> TemplateLibrary:
        """The shipped templates, the workspace's `templates/` folder (which may be absent),
        then the configured folders (`templates.folders`)."""
        own = workspace_root / "templates"
        return cls([own, *configured], optional=[own])

    def names(self) -> list[str]:
        return sorted(self._templates)

    def all(self) -> list[Template]:
        return [self._templates[name] for name in self.names()]

    def get(self, name: str) -> Template:
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateNotFound(name, self.names()) from None

    def broken(self) -> list[BrokenTemplate]:
        return list(self._broken)

    def reload(self) -> None:
        """Read every folder again."""
        signature = self._scan()
        templates = {t.name: t for t in self._shipped}
        broken: list[BrokenTemplate] = []
        for folder in self.folders:
            if not folder.is_dir() and folder not in self._optional:
                broken.append(BrokenTemplate(str(folder), "the folder does not exist"))
                continue
            found, failed = _load_folder(folder)
            templates.update(found)
            broken += failed
        self._templates, self._broken, self._signature = templates, broken, signature

    def refresh(self) -> bool:
        """Reload when a folder's files changed (added, removed, written); True if it did."""
        if self._scan() == self._signature:
            return False
        self.reload()
        return True

    def _scan(self) -> _Signature:
        return tuple(_folder_signature(folder) for folder in self.folders)


def _template_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def _load_folder(folder: Path) -> tuple[dict[str, Template], list[BrokenTemplate]]:
    found: dict[str, Template] = {}
    broken: list[BrokenTemplate] = []
    if not folder.is_dir():
        return found, broken
    try:
        files = _template_files(folder)
    except OSError as exc:
        return found, [BrokenTemplate(str(folder), f"cannot be listed: {exc.strerror or exc}")]
    for path in files:
        try:
            template = load_template(path)
        except TemplateFileError as exc:
            broken.append(BrokenTemplate(str(path), _problem(exc)))
            continue
        except TemplateError as exc:
            broken.append(BrokenTemplate(str(path), exc.message))
            continue
        if template.name in found:
            other = Path(found[template.name].source).name
            message = f"name: '{template.name}' is defined by {other} in the same folder too"
            broken.append(BrokenTemplate(str(path), message))
            continue
        found[template.name] = template
    return found, broken


def _problem(exc: TemplateFileError) -> str:
    return f"{exc.key}: {exc.problem}" if exc.key else exc.problem


def _folder_signature(folder: Path) -> tuple[str, bool, tuple[tuple[str, int, int], ...]]:
    try:
        files = _template_files(folder)
        stats = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:
        return str(folder), False, ()
    return str(folder), True, stats
