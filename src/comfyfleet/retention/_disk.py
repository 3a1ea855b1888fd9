"""Pruning this machine's files: unused inputs, old output folders (and the output folder's size
cap, oldest first), old temp files. Blocking file work: run it in a thread.

What a live job needs stays whatever its age: the inputs its graph names and its own output
folder (it may hold an earlier attempt's files). Each removal checks again at that moment that
the thing was not used or written since it was listed (see `_files` and `assets._sweep`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.assets import AssetStore, remove_unused, stored_files
from comfyfleet.retention._files import (
    Entry,
    delete,
    leftovers,
    measure,
    output_entries,
    remove_unchanged,
    temp_files,
)
from comfyfleet.retention._live import Live
from comfyfleet.retention._report import Item, Kind, Reason, Report
from comfyfleet.retention._settings import RetentionSettings


@dataclass
class Disk:
    assets: AssetStore | None = None
    output_dir: Path | None = None
    temp_dirs: Callable[[], list[Path]] = field(default=list)
    """The instances' temp folders, looked up at each run (instances come and go)."""
    shown_from: Path | None = None
    """Temp files are named relative to this folder (the workspace) in reports."""

    def prune(
        self, settings: RetentionSettings, report: Report, live: Live, *, dry_run: bool
    ) -> None:
        now = report.at
        if self.assets is not None and settings.inputs is not None:
            self._inputs(self.assets, now - settings.inputs, report, live, dry_run=dry_run)
        if self.output_dir is not None:
            self._outputs(self.output_dir, settings, report, live, dry_run=dry_run)
        if settings.temp is not None:
            base = self.shown_from or Path("/")
            for entry in temp_files(self.temp_dirs(), base):
                if entry.at >= now - settings.temp:
                    break
                if dry_run or remove_unchanged(entry):
                    report.remove(Item(Kind.TEMP, entry.name, entry.bytes, entry.at))

    def _inputs(
        self, assets: AssetStore, before: float, report: Report, live: Live, *, dry_run: bool
    ) -> None:
        for file in stored_files(assets):
            if file.used_at >= before:
                break  # oldest use first: the rest are newer
            if file.asset_id in live.assets:
                report.keep(Kind.INPUTS, file.size)
            elif dry_run or remove_unused(assets, file, before):
                report.remove(Item(Kind.INPUTS, file.name, file.size, file.used_at))

    def _outputs(
        self,
        folder: Path,
        settings: RetentionSettings,
        report: Report,
        live: Live,
        *,
        dry_run: bool,
    ) -> None:
        for path in leftovers(folder):  # a removal cut short: finish it
            measured = measure(path) or (0, report.at)
            if not dry_run:
                delete(path)
            report.remove(Item(Kind.OUTPUTS, path.name, measured[0], measured[1]))
        entries = output_entries(folder)
        before = None if settings.outputs is None else report.at - settings.outputs
        remaining: list[Entry] = []
        for entry in entries:
            old = before is not None and entry.at < before
            if old and entry.name in live.jobs:
                report.keep(Kind.OUTPUTS, entry.bytes)
            if old and entry.name not in live.jobs and (dry_run or remove_unchanged(entry)):
                report.remove(Item(Kind.OUTPUTS, entry.name, entry.bytes, entry.at))
            else:
                remaining.append(entry)
        if settings.outputs_max_bytes is not None:
            self._cap(remaining, settings.outputs_max_bytes, report, live, dry_run=dry_run)

    @staticmethod
    def _cap(entries: list[Entry], cap: int, report: Report, live: Live, *, dry_run: bool) -> None:
        """Remove the oldest entries until the folder holds at most `cap` bytes; a live job's
        folder stays, even when that leaves the folder over the cap."""
        total = sum(entry.bytes for entry in entries)
        for entry in entries:  # oldest write first
            if total <= cap:
                return
            if entry.name in live.jobs:
                continue
            if dry_run or remove_unchanged(entry):
                total -= entry.bytes
                report.remove(
                    Item(Kind.OUTPUTS, entry.name, entry.bytes, entry.at, Reason.SIZE_CAP)
                )
        if total > cap:
            report.notes.append(
                f"the output folder holds {total} bytes, over its cap of {cap}: what is left "
                "belongs to queued or running jobs or was written during the prune"
            )
