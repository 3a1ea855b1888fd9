"""RangeSet, the partial-file state, and the in-order hasher."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from comfyfleet.models._hashing import OrderedHasher
from comfyfleet.models._ranges import RangeSet
from comfyfleet.models._state import PartState, load_state, part_path, save_state


def test_ranges_merge_and_report_gaps() -> None:
    ranges = RangeSet([(10, 20), (0, 5), (5, 10), (30, 40)])
    assert list(ranges) == [(0, 20), (30, 40)]
    assert ranges.missing(50) == [(20, 30), (40, 50)]
    assert ranges.prefix() == 20 and ranges.run_end(35) == 40 and ranges.run_end(25) == 25
    assert ranges.total == 30 and not ranges.covers(50) and RangeSet([(0, 9)]).covers(9)


def test_state_round_trip_and_bad_states_are_ignored(tmp_path: Path) -> None:
    final = tmp_path / "m.bin"
    part_path(final).write_bytes(b"x" * 100)
    save_state(final, PartState("http://u", 200, '"e1"', None, RangeSet([(0, 100)])))
    state = load_state(final)
    assert state is not None and list(state.ranges) == [(0, 100)] and state.total == 200
    assert state.changed('"e2"', None) and not state.changed('W/"e1"', None)
    save_state(final, PartState("http://u", 200, None, None, RangeSet([(0, 150)])))
    assert load_state(final) is None, "claims more bytes than the partial file has"


def test_hasher_hashes_in_order_and_reads_back_what_did_not_fit(tmp_path: Path) -> None:
    data = os.urandom(64 * 1024)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = OrderedHasher(fd, buffer_limit=8 * 1024, chunk_bytes=4096)
        hasher.start()
        chunks = [(i, data[i : i + 4096]) for i in range(0, len(data), 4096)]
        for offset, chunk in reversed(chunks):  # worst order: everything ahead of the front
            hasher.feed(offset, chunk, len(chunk))
        assert hasher.finish(len(data)) == hashlib.sha256(data).hexdigest()
        assert 0 < hasher.readback_bytes < len(data)
    finally:
        os.close(fd)


def test_hasher_rebuilds_from_the_bytes_already_on_disk(tmp_path: Path) -> None:
    data = os.urandom(10000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = OrderedHasher(fd, on_disk=RangeSet([(0, 6000)]))
        hasher.start()
        hasher.feed(6000, data[6000:], 4000)
        assert hasher.finish(10000) == hashlib.sha256(data).hexdigest()
        assert hasher.rehashed_bytes == 6000 and hasher.readback_bytes == 0
    finally:
        os.close(fd)
