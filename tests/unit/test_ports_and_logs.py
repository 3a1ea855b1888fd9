"""Choosing ports for instances, and the instance logs: rotation, tail and follow."""

from __future__ import annotations

import gc
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.errors import PortInUseError
from comfyfleet.supervise._logs import RotatingLog, follow, tail_lines
from comfyfleet.supervise._ports import choose_port, port_is_free

HOST = "127.0.0.1"


@pytest.fixture
def listener() -> Iterator[int]:
    """A port held by a listening socket, like a running ComfyUI."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


class FakeProbe:
    """Ports listed as busy are taken; every other port is free. Remembers what was asked."""

    def __init__(self, *busy: int) -> None:
        self.busy = set(busy)
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> bool:
        self.asked.append((host, port))
        return port not in self.busy


# --- port_is_free -------------------------------------------------------------------------------


def test_listening_port_is_not_free(listener: int) -> None:
    assert not port_is_free(HOST, listener)


def test_released_port_is_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
    assert port_is_free(HOST, port)


def test_real_probe_skips_a_listening_port(listener: int) -> None:
    port, note = choose_port(HOST, listener, policy="next")
    assert port > listener
    assert note == f"port {listener} is in use, took {port}"


def test_real_probe_fails_on_a_listening_port(listener: int) -> None:
    with pytest.raises(PortInUseError, match=f"port {listener} on {HOST} is in use"):
        choose_port(HOST, listener, policy="fail")


# --- choose_port --------------------------------------------------------------------------------


def test_wanted_port_when_free() -> None:
    probe = FakeProbe()
    assert choose_port(HOST, 8188, probe=probe) == (8188, None)
    assert probe.asked == [(HOST, 8188)]


def test_busy_port_takes_the_next_free_one_and_says_so() -> None:
    port, note = choose_port(HOST, 8188, policy="next", probe=FakeProbe(8188, 8189))
    assert port == 8190
    assert note is not None and "8188" in note and "8190" in note


def test_busy_port_under_fail_policy_names_the_port() -> None:
    with pytest.raises(PortInUseError, match="port 8188") as info:
        choose_port(HOST, 8188, policy="fail", probe=FakeProbe(8188))
    assert info.value.hint is not None and "port_conflict" in info.value.hint


def test_ports_planned_for_other_instances_are_skipped() -> None:
    probe = FakeProbe(8188)
    port, note = choose_port(HOST, 8188, avoid={8189, 8190}, probe=probe)
    assert port == 8191
    assert note is not None and "8191" in note
    assert (HOST, 8189) not in probe.asked
    assert (HOST, 8190) not in probe.asked


def test_free_port_under_fail_policy_is_taken() -> None:
    assert choose_port(HOST, 9000, policy="fail", probe=FakeProbe(9001)) == (9000, None)


def test_no_free_port_at_all() -> None:
    with pytest.raises(PortInUseError, match=r"no free port on 127\.0\.0\.1 from 65000"):
        choose_port(HOST, 65000, probe=lambda _h, _p: False)


# --- RotatingLog --------------------------------------------------------------------------------


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_log_appends_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "instance-0.log"
    log = RotatingLog(path, max_bytes=1024, backups=2)
    log.write(b"one\n")
    log.close()
    log = RotatingLog(path, max_bytes=1024, backups=2)
    log.write(b"two\n")
    log.close()
    assert read(path) == "one\ntwo\n"


def test_log_rotates_at_max_bytes_keeping_backups(tmp_path: Path) -> None:
    path = tmp_path / "instance-0.log"
    log = RotatingLog(path, max_bytes=10, backups=2)
    for n in range(5):
        log.write(f"line{n}...\n".encode())  # 10 bytes each: one line per part
    log.close()
    assert read(path) == "line4...\n"
    assert read(tmp_path / "instance-0.log.1") == "line3...\n"
    assert read(tmp_path / "instance-0.log.2") == "line2...\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "instance-0.log",
        "instance-0.log.1",
        "instance-0.log.2",
    ]


def test_log_rotates_only_past_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=12, backups=1)
    log.write(b"12345\n")
    log.write(b"67890\n")  # exactly max_bytes: still one part
    assert not (tmp_path / "a.log.1").exists()
    log.write(b"x\n")
    log.close()
    assert read(tmp_path / "a.log.1") == "12345\n67890\n"
    assert read(path) == "x\n"


def test_oversized_write_goes_into_a_fresh_part(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=8, backups=1)
    log.write(b"a\n")
    log.write(b"a very long line\n")
    log.close()
    assert read(path) == "a very long line\n"
    assert read(tmp_path / "a.log.1") == "a\n"


def test_no_backups_means_truncation(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=4, backups=0)
    log.write(b"old\n")
    log.write(b"new\n")
    log.close()
    assert read(path) == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log"]


def test_comfyfleet_lines_are_stamped_and_tagged(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=1024, backups=1)
    log.line("starting instance 0")
    log.close()
    (line,) = read(path).splitlines()
    assert line.endswith(" [comfyfleet] starting instance 0")
    time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")


# --- tail_lines ---------------------------------------------------------------------------------


def test_tail_reads_across_the_previous_part(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=20, backups=3)
    for n in range(6):
        log.write(f"line {n}\n".encode())  # 7 bytes: two lines per part
    log.close()
    assert read(path) == "line 4\nline 5\n"
    assert tail_lines(path, 3) == ["line 3", "line 4", "line 5"]
    assert tail_lines(path, 2) == ["line 4", "line 5"]
    assert tail_lines(path, 100) == ["line 2", "line 3", "line 4", "line 5"]


def test_tail_of_missing_log_is_empty(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "nope.log", 10) == []


# --- follow -------------------------------------------------------------------------------------


def test_follow_yields_new_lines_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=30, backups=2)
    log.write(b"written before following\n")

    def writer() -> None:
        time.sleep(0.1)
        for n in range(6):
            log.write(f"new {n}\n".encode())  # 6 bytes: a rotation after the fifth
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # run to the deadline
        seen = list(follow(path, poll=0.01, stop=time.monotonic() + 1.0))
    finally:
        thread.join()
        log.close()
    assert seen == [f"new {n}" for n in range(6)]
    # two rotations happened while it was followed
    assert read(tmp_path / "a.log.2") == "written before following\n"
    assert read(tmp_path / "a.log.1") == "".join(f"new {n}\n" for n in range(5))
    assert read(path) == "new 5\n"


def follow_a_late_log(tmp_path: Path) -> list[str]:
    """Follow a log that appears (holding "first") after following began; "second" follows."""
    path = tmp_path / "a.log"
    prepared = tmp_path / "prepared"

    def writer() -> None:
        time.sleep(0.1)
        prepared.write_text("first\n", encoding="utf-8")
        prepared.rename(path)  # appears at once, with its first line
        time.sleep(0.1)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("second\n")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        return list(follow(path, poll=0.01, stop=time.monotonic() + 0.5))
    finally:
        thread.join()


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    seen = follow_a_late_log(tmp_path)
    assert "second" in seen
    assert set(seen) <= {"first", "second"}


def test_follow_reads_a_late_log_from_its_start(tmp_path: Path) -> None:
    assert follow_a_late_log(tmp_path) == ["first", "second"]


def test_follow_closes_its_file_when_the_consumer_stops(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=1024, backups=1)
    lines = follow(path, poll=0.01, stop=time.monotonic() + 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert next(_after_write(lines, log)) == "hello"
        lines.close()
        del lines
        gc.collect()
    log.close()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def _after_write(lines: Iterator[str], log: RotatingLog) -> Iterator[str]:
    """Start following (so it opens at the end), then write one line and pass lines through."""
    timer = threading.Timer(0.05, log.write, args=(b"hello\n",))
    timer.start()
    try:
        yield from lines
    finally:
        timer.join()


def test_follow_stops_at_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("old\n", encoding="utf-8")
    started = time.monotonic()
    assert list(follow(path, poll=0.01, stop=started + 0.1)) == []
    assert time.monotonic() - started < 2
