"""A set of byte ranges [start, end): what part of a file is already on disk.

Kept merged and sorted so that the partial-file state stays small however many segments wrote it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator


class RangeSet:
    """Merged, sorted, half-open byte ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        ranges = self._ranges
        i = bisect_left(ranges, (start, start))
        if i > 0 and ranges[i - 1][1] >= start:  # touches the range before
            i -= 1
            start = ranges[i][0]
        j = i
        while j < len(ranges) and ranges[j][0] <= end:
            end = max(end, ranges[j][1])
            j += 1
        ranges[i:j] = [(start, end)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and other._ranges == self._ranges

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges})"

    @property
    def total(self) -> int:
        """Bytes covered."""
        return sum(end - start for start, end in self._ranges)

    def prefix(self) -> int:
        """End of the run that starts at 0 (0 when byte 0 is missing)."""
        if self._ranges and self._ranges[0][0] == 0:
            return self._ranges[0][1]
        return 0

    def run_end(self, offset: int) -> int:
        """End of the covered run that contains `offset`, or `offset` when it is not covered."""
        i = bisect_left(self._ranges, (offset + 1, offset + 1)) - 1
        if i >= 0 and self._ranges[i][0] <= offset < self._ranges[i][1]:
            return self._ranges[i][1]
        return offset

    def missing(self, size: int) -> list[tuple[int, int]]:
        """The gaps in [0, size)."""
        gaps: list[tuple[int, int]] = []
        position = 0
        for start, end in self._ranges:
            if start >= size:
                break
            if start > position:
                gaps.append((position, start))
            position = max(position, end)
        if position < size:
            gaps.append((position, size))
        return gaps

    def covers(self, size: int) -> bool:
        return not self.missing(size)

    def to_list(self) -> list[list[int]]:
        return [[start, end] for start, end in self._ranges]
