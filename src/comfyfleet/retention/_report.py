"""What a prune removes, or would remove: items grouped by kind, with counts and bytes.

The same record serves both answers: a dry run's report lists what would go, a real run's what
went (after the checks made at the moment of removal, which may keep something the plan listed:
an input used meanwhile). Kinds removed in bulk by the stores (events, deliveries, preview
frames) are counted without items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    JOBS = "jobs"
    EVENTS = "events"
    WEBHOOKS_DELIVERED = "webhooks_delivered"
    WEBHOOKS_FAILED = "webhooks_failed"
    PREVIEWS = "previews"
    INPUTS = "inputs"
    OUTPUTS = "outputs"
    TEMP = "temp"


class Reason(StrEnum):
    AGE = "age"
    SIZE_CAP = "size cap"


@dataclass(frozen=True)
class Item:
    """One thing removed: a job (by id), an input or temp file, an output folder (by name)."""

    kind: Kind
    name: str
    bytes: int
    at: float
    """The time its age counts from: when the job ended, the file's last use or write."""
    reason: Reason = Reason.AGE

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.bytes, "at": self.at, "reason": str(self.reason)}


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, count: int, size: int) -> None:
        self.count += count
        self.bytes += size


@dataclass
class Report:
    """One prune: `removed` by kind (what would go, for a dry run), the `items` behind it where
    a kind has them, what was `kept` although old because a live job needs it, and notes."""

    dry_run: bool
    at: float
    limits: dict[Kind, float | None] = field(default_factory=dict)
    """The age limit of each kind, in seconds (None: kept forever)."""
    removed: dict[Kind, Tally] = field(default_factory=lambda: {k: Tally() for k in Kind})
    items: list[Item] = field(default_factory=list)
    kept: dict[Kind, Tally] = field(default_factory=lambda: {k: Tally() for k in Kind})
    notes: list[str] = field(default_factory=list)

    def remove(self, item: Item) -> None:
        self.items.append(item)
        self.removed[item.kind].add(1, item.bytes)

    def count(self, kind: Kind, count: int, size: int) -> None:
        self.removed[kind].add(count, size)

    def keep(self, kind: Kind, size: int) -> None:
        self.kept[kind].add(1, size)

    def of(self, kind: Kind) -> list[Item]:
        return [item for item in self.items if item.kind is kind]

    @property
    def total(self) -> Tally:
        return Tally(
            sum(t.count for t in self.removed.values()), sum(t.bytes for t in self.removed.values())
        )

    def to_dict(self) -> dict[str, Any]:
        kinds: dict[str, Any] = {}
        for kind in Kind:
            tally = self.removed[kind]
            entry: dict[str, Any] = {"count": tally.count, "bytes": tally.bytes}
            entry["limit_s"] = self.limits.get(kind)
            if kind not in _COUNTED_ONLY:
                entry["items"] = [item.to_dict() for item in self.of(kind)]
            kept = self.kept[kind]
            if kept.count:
                entry["kept"] = {"count": kept.count, "bytes": kept.bytes}
            kinds[str(kind)] = entry
        total = self.total
        return {
            "dry_run": self.dry_run,
            "at": self.at,
            "total": {"count": total.count, "bytes": total.bytes},
            "kinds": kinds,
            "notes": list(self.notes),
        }


_COUNTED_ONLY = frozenset(
    {Kind.EVENTS, Kind.WEBHOOKS_DELIVERED, Kind.WEBHOOKS_FAILED, Kind.PREVIEWS}
)
"""Kinds the stores remove in bulk: counted, not listed one by one."""
