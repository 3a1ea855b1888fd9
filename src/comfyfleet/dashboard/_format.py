"""Numbers for people: sizes, durations, ages and times, written the same way on every page."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from comfyfleet.models import human_size


def size(value: float | None) -> str:
    return "—" if value is None else human_size(value)


def duration(seconds: float | None) -> str:
    """`0.42 s`, `12.3 s`, `4 min 05 s`, `2 h 07 min`, `3 d 4 h`."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def ago(at: float | None, now: float | None = None) -> str:
    """How long ago `at` was: `just now`, `42 s ago`, `3 min ago`, ..."""
    if at is None:
        return "—"
    passed = (time.time() if now is None else now) - at
    if passed < 2:
        return "just now"
    if passed < 60:
        return f"{passed:.0f} s ago"
    if passed < 3600:
        return f"{passed // 60:.0f} min ago"
    if passed < 86_400:
        return f"{passed // 3600:.0f} h ago"
    return f"{passed // 86_400:.0f} d ago"


def timestamp(at: float | None) -> str:
    """`2026-05-16 14:03:27 UTC`: one zone for everyone reading the same page."""
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: float | None) -> str:
    """For `<time datetime=...>`."""
    return "" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def percent(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return max(0.0, min(100.0, 100 * part / whole))
