"""Small charts as SVG shapes computed here: jobs per bucket as stacked bars, latency as lines.

No chart library is sent to the browser: a chart is a handful of `<rect>` and `<polyline>`
elements the template writes out, readable without JavaScript and a few hundred bytes each.
Every chart carries a sentence saying what it shows, for screen readers and for its title.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WIDTH = 600
HEIGHT = 150
LEFT = 40
"""Room for the y labels."""
BOTTOM = 20
"""Room for the x labels."""
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True)
class Line:
    points: str
    kind: str
    label: str
    dots: tuple[tuple[float, float], ...] = ()
    """Points drawn as dots as well: a value with no neighbour, which a line cannot show."""


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    summary: str
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    empty: bool = False

    @property
    def plot_bottom(self) -> float:
        return self.height - BOTTOM


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n at or above `value` (an axis maximum)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value - 1e-12:
            return float(candidate)
    return float(10 ** (exponent + 1))


def count_ceiling(value: float) -> float:
    """An axis maximum for counts whose half is a whole number too: 2, 4, 6, 8, 10, 20, 50,
    100, 200, 500, ..."""
    if value <= 10:
        return float(max(2, math.ceil(value / 2) * 2))
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def _x_ticks(count: int, bucket_s: float, plot_w: float) -> list[Tick]:
    """Minutes before now at the start, the middle and the end."""
    span_min = count * bucket_s / 60
    return [
        Tick(LEFT, f"-{span_min:g} min"),
        Tick(LEFT + plot_w / 2, f"-{span_min / 2:g} min"),
        Tick(LEFT + plot_w, "now"),
    ]


def _y_ticks(top: float, unit: str) -> list[Tick]:
    plot_h = HEIGHT - BOTTOM - TOP
    return [
        Tick(HEIGHT - BOTTOM - plot_h * fraction, f"{top * fraction:g}{unit}")
        for fraction in (0, 0.5, 1)
    ]


def throughput_chart(stats: dict[str, Any]) -> Chart:
    """Jobs ended per bucket, succeeded under failed under cancelled."""
    buckets: Sequence[dict[str, Any]] = stats.get("buckets") or []
    totals = stats.get("totals") or {}
    ended = sum(int(totals.get(k, 0)) for k in ("succeeded", "failed", "cancelled"))
    minutes = float(stats.get("window_s", 3600)) / 60
    summary = (
        f"{ended} jobs ended in the last {minutes:g} minutes "
        f"({totals.get('succeeded', 0)} succeeded, {totals.get('failed', 0)} failed, "
        f"{totals.get('cancelled', 0)} cancelled): {totals.get('jobs_per_minute', 0):g} per minute"
    )
    if not buckets:
        return Chart(summary, empty=True)
    plot_w = WIDTH - LEFT - 4
    plot_h = HEIGHT - BOTTOM - TOP
    top = count_ceiling(max(_ended(b) for b in buckets))
    slot = plot_w / len(buckets)
    gap = min(2.0, slot * 0.2)
    bars = []
    for n, bucket in enumerate(buckets):
        base = float(HEIGHT - BOTTOM)
        for kind in ("succeeded", "failed", "cancelled"):
            count = int(bucket.get(kind, 0))
            if not count:
                continue
            height = plot_h * count / top
            base -= height
            bars.append(
                Bar(
                    round(LEFT + n * slot + gap / 2, 2),
                    round(base, 2),
                    round(max(slot - gap, 0.5), 2),
                    round(height, 2),
                    kind,
                    f"{count} {kind}",
                )
            )
    bucket_s = float(stats.get("bucket_s", 60))
    return Chart(
        summary,
        bars=bars,
        y_ticks=_y_ticks(top, ""),
        x_ticks=_x_ticks(len(buckets), bucket_s, plot_w),
        empty=ended == 0,
    )


def latency_chart(stats: dict[str, Any]) -> Chart:
    """p50 and p95 of the time from submit to end, per bucket (gaps where nothing ended)."""
    buckets: Sequence[dict[str, Any]] = stats.get("buckets") or []
    overall = (stats.get("latency") or {}).get("total_s") or {}
    p50, p95 = overall.get("p50"), overall.get("p95")
    if p50 is None:
        summary = "No job ended in this window, so there is no latency to show"
    else:
        summary = f"Submit to end over the window: median {p50:.2f} s, 95th percentile {p95:.2f} s"
    values = [b[k] for b in buckets for k in ("total_p50", "total_p95") if b.get(k) is not None]
    if not buckets or not values:
        return Chart(summary, empty=True)
    plot_w = WIDTH - LEFT - 4
    plot_h = HEIGHT - BOTTOM - TOP
    top = nice_ceiling(max(values))
    slot = plot_w / len(buckets)
    lines = []
    for key, kind, label in (
        ("total_p95", "p95", "95th percentile"),
        ("total_p50", "p50", "median"),
    ):
        for run in _runs(buckets, key):
            xy = [
                (round(LEFT + (n + 0.5) * slot, 1), round(HEIGHT - BOTTOM - plot_h * v / top, 1))
                for n, v in run
            ]
            points = " ".join(f"{x},{y}" for x, y in xy)
            lines.append(Line(points, kind, label, tuple(xy) if len(run) == 1 else ()))
    bucket_s = float(stats.get("bucket_s", 60))
    return Chart(
        summary,
        lines=lines,
        y_ticks=_y_ticks(top, " s"),
        x_ticks=_x_ticks(len(buckets), bucket_s, plot_w),
    )


def _ended(bucket: dict[str, Any]) -> int:
    return sum(int(bucket.get(k, 0)) for k in ("succeeded", "failed", "cancelled"))


def _runs(buckets: Sequence[dict[str, Any]], key: str) -> list[list[tuple[int, float]]]:
    """Stretches of buckets that have a value: each is one polyline."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for n, bucket in enumerate(buckets):
        value = bucket.get(key)
        if value is None:
            if current:
                runs.append(current)
            current = []
            continue
        current.append((n, float(value)))
    if current:
        runs.append(current)
    return runs
