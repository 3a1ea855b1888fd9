"""`comfyfleet nodes check`: which custom nodes failed to import, read from the instances' logs.

ComfyUI imports every custom node at start and goes on without the ones that raise: the server
comes up, and a workflow using them fails later with "node type not found". What it prints is
the only record, so this reads it from each instance's log (the supervisor keeps ComfyUI's
output there). After the imports ComfyUI prints one report:

    Import times for custom nodes:
       0.0 seconds (IMPORT FAILED): /ws/custom_nodes/broken-nodes
       0.1 seconds: /ws/custom_nodes/good-nodes

and before it, for each failure, a line saying why ("Cannot import PATH module for custom
nodes: ERROR", "Skip PATH module for custom nodes due to ...", or a comfy_entrypoint error).
Only the newest report of each log counts, with the reasons printed since that start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_REPORT = "Import times for custom nodes:"
_TIME_LINE = re.compile(r"[\d.]+ seconds( \(IMPORT FAILED\))?: (.+?)\s*$")
_START = re.compile(r"\[comfyfleet\] instance \d+: started")
_REASONS = (
    re.compile(r"Cannot import (?P<path>.+?) module for custom nodes: (?P<why>.*)$"),
    re.compile(r"Skip (?P<path>.+?) module for custom nodes (?P<why>due to .*)$"),
    re.compile(r"Error while calling comfy_entrypoint in (?P<path>.+?): (?P<why>.*)$"),
    re.compile(r"comfy_entrypoint in (?P<path>.+?) (?P<why>(is not|did not) .*?)(, skipping)?\.?$"),
)


@dataclass(frozen=True)
class ImportReport:
    """The custom-node imports of an instance's newest start: module name -> failure reason
    (None for a module that imported)."""

    instance: int
    modules: dict[str, str | None]


@dataclass(frozen=True)
class NodeImport:
    """One node across instances."""

    name: str
    failed_on: tuple[int, ...]
    loaded_on: tuple[int, ...]
    reason: str | None

    @property
    def ok(self) -> bool:
        return not self.failed_on


def _module_name(path: str) -> str:
    return Path(path.strip()).name


def _read(log: Path) -> str:
    """The log with its previous part before it (the report may be just before a rotation)."""
    parts = [log.with_name(log.name + ".1"), log]
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in parts if p.is_file())


def parse_import_report(text: str, instance: int = 0) -> ImportReport | None:
    """The newest import report in a log's text; None when ComfyUI has not printed one."""
    at = text.rfind(_REPORT)
    if at < 0:
        return None
    starts = [m.start() for m in _START.finditer(text, 0, at)]
    segment_start = starts[-1] if starts else 0
    reasons: dict[str, str] = {}
    for line in text[segment_start:at].splitlines():
        for pattern in _REASONS:
            found = pattern.search(line)
            if found:
                reasons.setdefault(_module_name(found["path"]), found["why"].strip())
                break
    modules: dict[str, str | None] = {}
    for line in text[at + len(_REPORT) :].splitlines()[1:]:
        found = _TIME_LINE.search(line)
        if found is None:
            if line.strip():
                break
            continue
        name = _module_name(found[2])
        modules[name] = (reasons.get(name) or "import failed") if found[1] else None
    return ImportReport(instance, modules)


def instance_logs(logs_dir: Path) -> dict[int, Path]:
    """Every instance log of a workspace by instance number."""
    found: dict[int, Path] = {}
    for path in logs_dir.glob("instance-*.log"):
        number = path.name.removeprefix("instance-").removesuffix(".log")
        if number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))


def import_reports(logs_dir: Path) -> list[ImportReport]:
    """The newest import report of every instance that has printed one."""
    reports = []
    for index, path in instance_logs(logs_dir).items():
        report = parse_import_report(_read(path), index)
        if report is not None:
            reports.append(report)
    return reports


def node_imports(reports: list[ImportReport]) -> list[NodeImport]:
    """Per module, where it failed (with the first reason) and where it loaded."""
    names = sorted({name for report in reports for name in report.modules})
    result = []
    for name in names:
        failed = [r for r in reports if name in r.modules and r.modules[name] is not None]
        loaded = [r.instance for r in reports if name in r.modules and r.modules[name] is None]
        reason = failed[0].modules[name] if failed else None
        result.append(NodeImport(name, tuple(r.instance for r in failed), tuple(loaded), reason))
    return result
