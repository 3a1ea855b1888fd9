"""The state of a partial download, beside it: `<name>.part` holds the bytes, `<name>.part.json`
says which bytes are good and which version of the remote file they belong to.

The state is written only after the bytes it lists were written (and, with `fsync_checkpoints`,
fsynced), to a temporary file then renamed, so after `kill -9` it never claims bytes that were
lost. A download that cannot prove its partial bytes belong to the same remote
file (another URL, another ETag or Last-Modified) starts again from zero.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.models._ranges import RangeSet

STATE_VERSION = 1
PART_SUFFIX = ".part"
STATE_SUFFIX = ".part.json"


def part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)


def state_path(final: Path) -> Path:
    return final.with_name(final.name + STATE_SUFFIX)


@dataclass
class PartState:
    """What is known about `<name>.part`."""

    url: str
    total: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    ranges: RangeSet = field(default_factory=RangeSet)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "url": self.url,
            "total": self.total,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "ranges": self.ranges.to_list(),
        }

    @classmethod
    def from_json(cls, data: Any) -> PartState | None:
        """None for anything that is not a state this version wrote (then: start over)."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return None
        try:
            ranges = RangeSet((int(a), int(b)) for a, b in data.get("ranges", []))
            total = data.get("total")
            return cls(
                url=str(data["url"]),
                total=int(total) if total is not None else None,
                etag=data.get("etag"),
                last_modified=data.get("last_modified"),
                ranges=ranges,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def changed(self, etag: str | None, last_modified: str | None) -> bool:
        """Whether a response's validators prove it is not the file these bytes came from.

        The ETag decides when both sides have one, else Last-Modified; with nothing to compare
        the bytes are kept (the sha256 at the end still guards them)."""
        if self.etag and etag:
            return _strong(self.etag) != _strong(etag)
        if self.last_modified and last_modified:
            return self.last_modified != last_modified
        return False


def _strong(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def load_state(final: Path) -> PartState | None:
    """The state of `final`'s partial download, or None when there is none (or it is unusable:
    the .part file is missing or shorter than the state claims)."""
    path = state_path(final)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    state = PartState.from_json(data)
    if state is None:
        return None
    try:
        size = part_path(final).stat().st_size
    except OSError:
        return None
    ends = [end for _, end in state.ranges]
    if ends and max(ends) > size:
        return None
    return state


def save_state(final: Path, state: PartState, *, sync: bool = True) -> None:
    """Atomically replace the state file (the data it describes must already be written, and
    fsynced where `sync` asks for durability against power cuts too)."""
    path = state_path(final)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(state.to_json(), handle)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def discard_partial(final: Path) -> None:
    """Remove the partial file and its state (missing ones are fine)."""
    for path in (part_path(final), state_path(final), state_path(final).with_suffix(".json.tmp")):
        path.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
