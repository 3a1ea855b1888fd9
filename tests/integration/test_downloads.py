"""The downloader against a real HTTP server on loopback, with the failures model hosts show:
no range support, dropped connections, 500s, wrong bodies, tokens, a changed file, a full disk,
and a downloader process killed with SIGKILL mid-file and started again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.models import (
    ChecksumMismatch,
    Downloader,
    DownloadError,
    DownloadItem,
    DownloadProgress,
    DownloadResult,
    InsufficientSpace,
    ModelSettings,
    SourceAuthError,
    SourceNotFound,
)
from tests.model_file_server import ModelFileServer, write_random_file

KiB = 1024
SIZE = 3 * 1024 * KiB + 123  # not a multiple of anything
SEGMENT = 256 * KiB


def settings(**overrides: Any) -> ModelSettings:
    values: dict[str, Any] = {
        "segment_bytes": SEGMENT,
        "parallel_min_bytes": 0,
        "checkpoint_bytes": 128 * KiB,
        "chunk_bytes": 64 * KiB,
        "hash_buffer_bytes": 512 * KiB,
        "connections": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "free_space_margin_bytes": 0,
        "progress_interval_s": 0.05,
    }
    values.update(overrides)
    return ModelSettings(**values)


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "served"
    return root, write_random_file(root / "model.bin", SIZE, seed=7)


def fetch(
    url: str, dest: Path, sha: str | None = None, *, env: dict[str, str] | None = None, **kw: Any
) -> tuple[DownloadResult, list[DownloadProgress]]:
    seen: list[DownloadProgress] = []

    async def main() -> DownloadResult:
        downloader = Downloader(settings(**kw), env=env or {})
        return await downloader.download(DownloadItem(url, dest, sha256=sha), seen.append)

    return asyncio.run(main()), seen


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parallel_segments_fetch_each_byte_once(served: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = served
    dest = tmp_path / "models" / "model.bin"
    with ModelFileServer(root) as server:
        result, progress = fetch(server.url("model.bin"), dest, sha)
        gets = server.requests("model.bin")
    assert digest(dest) == sha == result.sha256
    assert result.connections == 4
    assert len({r.client_port for r in gets}) == 4, "segments came over 4 connections"
    assert all(r.status == 206 for r in gets)
    assert sum(r.sent for r in gets) == SIZE, "no byte was fetched twice"
    assert not Path(f"{dest}.part").exists() and not Path(f"{dest}.part.json").exists()
    assert progress[-1].phase == "done" and progress[-1].done == SIZE


def test_sha256_is_computed_while_streaming_without_a_second_read(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root) as server:
        result, _ = fetch(server.url("model.bin"), dest, sha, hash_buffer_bytes=SIZE)
    assert digest(dest) == sha == result.sha256 and result.connections == 4
    assert result.readback_bytes == 0 and result.rehashed_bytes == 0, "the file was read again"


def test_concurrency_limit_fetches_one_file_after_the_other(tmp_path: Path) -> None:
    root = tmp_path / "served"
    names = ["a.bin", "b.bin", "c.bin"]
    shas = [write_random_file(root / name, SIZE, seed=i) for i, name in enumerate(names)]

    async def main(server: ModelFileServer) -> list[DownloadResult]:
        items = [
            DownloadItem(server.url(name), tmp_path / "out" / name, sha256=sha)
            for name, sha in zip(names, shas, strict=True)
        ]
        return await Downloader(settings(concurrency=1), env={}).download_all(items)

    with ModelFileServer(root) as server:
        results = asyncio.run(main(server))
        order = [r.path.lstrip("/") for r in server.log]
    assert [r.sha256 for r in results] == shas
    runs = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert sorted(runs) == names, f"the files' requests overlapped: {runs}"


def test_local_path_source_is_copied_and_verified(served: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = served
    copy = tmp_path / "copy.bin"
    result, progress = fetch(str(root / "model.bin"), copy, sha)
    assert digest(copy) == sha == result.sha256 and progress[-1].phase == "done"
    other = tmp_path / "other.bin"
    with pytest.raises(ChecksumMismatch):
        fetch(str(root / "model.bin"), other, "0" * 64)
    assert not other.exists() and not Path(f"{other}.part").exists()


def test_no_range_support_restarts_from_zero_and_says_so(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, drop_at=0.5, drops=100) as server:
        with pytest.raises(DownloadError, match="gave up after 0 retries"):
            fetch(server.url("model.bin"), dest, sha, retries=0, connections=1)
        assert Path(f"{dest}.part").exists() and not dest.exists()
        server.behavior.ranges, server.behavior.drop_at = False, None
        before = len(server.log)
        result, _ = fetch(server.url("model.bin"), dest, sha)
        gets = server.log[before:]
    assert digest(dest) == sha
    assert any("does not support ranges; restarting from zero" in n for n in result.notes)
    assert [(r.status, r.sent) for r in gets] == [(200, SIZE)]


def test_dropped_connection_resumes_where_it_stopped(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, drop_at=0.5) as server:
        fetch(server.url("model.bin"), dest, sha, connections=1)
        gets = server.requests("model.bin")
        sent = server.bytes_sent("model.bin")
    assert digest(dest) == sha
    # only what was in flight when the connection dropped (less than one read) comes twice
    assert SIZE <= sent < SIZE + 64 * KiB, "the retry asked only for the bytes not received"
    resumed_at = [int(r.range_header[6:].split("-")[0]) for r in gets[1:] if r.range_header]
    assert any(SIZE // 2 - 64 * KiB < at <= SIZE // 2 for at in resumed_at), resumed_at


def test_dropped_connection_without_ranges_skips_what_it_has(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, drop_at=0.5, ranges=False) as server:
        result, _ = fetch(server.url("model.bin"), dest, sha)
    assert digest(dest) == sha
    assert any("no range support" in n for n in result.notes)


def test_server_errors_are_retried_with_backoff(served: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, fail_times=2) as server:
        fetch(server.url("model.bin"), dest, sha)
        statuses = [r.status for r in server.requests("model.bin")]
    assert statuses[:2] == [500, 500] and 206 in statuses
    assert digest(dest) == sha


def test_server_errors_past_the_retries_fail_retryable(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    with ModelFileServer(root, fail_times=10, fail_status=503) as server:
        with pytest.raises(DownloadError) as caught:
            fetch(server.url("model.bin"), tmp_path / "m.bin", sha, retries=2)
        assert len(server.requests("model.bin")) == 3
    assert caught.value.retryable and "HTTP 503" in caught.value.message


def test_wrong_body_fails_with_both_hashes_and_leaves_nothing(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, wrong_body=True) as server:
        with pytest.raises(ChecksumMismatch) as caught:
            fetch(server.url("model.bin"), dest, sha)
    wrong = caught.value.actual
    assert sha in caught.value.message and wrong in caught.value.message and wrong != sha
    assert list(tmp_path.iterdir()) == [root], "neither the file nor its partial remains"


@pytest.mark.parametrize(
    ("token", "error", "hint"),
    [
        (None, SourceAuthError, "set HF_TOKEN"),
        ("wrong", SourceAuthError, "the token in HF_TOKEN may not read this file"),
    ],
)
def test_auth_errors_name_the_token(
    tmp_path: Path, token: str | None, error: type[Exception], hint: str
) -> None:
    root = tmp_path / "hub"
    write_random_file(root / "org" / "repo" / "resolve" / "main" / "w.safetensors", 1000)
    env = {"HF_TOKEN": token} if token else {}
    with ModelFileServer(root, token="secret") as server:
        with pytest.raises(error) as caught:
            fetch(
                "hf://org/repo/w.safetensors",
                tmp_path / "w.safetensors",
                env=env,
                huggingface_url=server.base_url,
            )
    assert hint in str(caught.value)


def test_hf_source_with_token_and_404(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    sha = write_random_file(root / "org" / "repo" / "resolve" / "v2" / "sub" / "w.bin", 5000)
    with ModelFileServer(root, token="secret") as server:
        result, _ = fetch(
            "hf://org/repo/sub/w.bin@v2",
            tmp_path / "w.bin",
            env={"HF_TOKEN": "secret"},
            huggingface_url=server.base_url,
        )
        assert result.sha256 == sha
        with pytest.raises(SourceNotFound, match="HTTP 404"):
            fetch(
                "hf://org/repo/missing.bin",
                tmp_path / "x.bin",
                env={"HF_TOKEN": "secret"},
                huggingface_url=server.base_url,
            )


def test_changed_etag_restarts_from_zero(served: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, drop_at=0.5, drops=100) as server:
        with pytest.raises(DownloadError):
            fetch(server.url("model.bin"), dest, sha, retries=0, connections=1)
        server.behavior.drop_at = None
        server.behavior.etag_suffix = "-v2"
        result, _ = fetch(server.url("model.bin"), dest, sha, connections=1)
    assert any("changed on the server" in n and "restarting from zero" in n for n in result.notes)
    assert digest(dest) == sha
    assert result.fetched_bytes == SIZE, "nothing of the old partial file was kept"


def test_full_disk_fails_before_downloading(served: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = served
    with ModelFileServer(root) as server:
        with pytest.raises(InsufficientSpace, match="free"):

            async def main() -> None:
                item = DownloadItem(server.url("model.bin"), tmp_path / "m.bin", size=2**60)
                await Downloader(settings(), env={}).download(item)

            asyncio.run(main())
        assert server.log == [], "nothing was requested"


def test_kill_9_mid_file_then_resume(tmp_path: Path) -> None:
    size = 8 * 1024 * KiB
    segment = 512 * KiB
    root = tmp_path / "served"
    sha = write_random_file(root / "big.bin", size, seed=3)
    dest = tmp_path / "models" / "big.bin"
    sets = [
        f"segment_bytes={segment}",
        "checkpoint_bytes=131072",
        "chunk_bytes=65536",
        "connections=2",
        "parallel_min_bytes=0",
        "free_space_margin_bytes=0",
        "progress_interval_s=0.05",
    ]
    with ModelFileServer(root, throttle_bps=2 * 1024 * KiB) as server:
        argv = [sys.executable, "-m", "comfyfleet.models", "download", server.url("big.bin")]
        argv += [str(dest), "--sha256", sha, "--progress"]
        for pair in sets:
            argv += ["--set", pair]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("done", 0) >= size * 0.4 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        assert not dest.exists(), "a partial file never has the final name"
        state = json.loads(Path(f"{dest}.part.json").read_text())
        assert 0 < sum(b - a for a, b in state["ranges"]) < size
        first_run = server.bytes_sent("big.bin")
        server.behavior.throttle_bps = None
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        total_sent = server.bytes_sent("big.bin")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert digest(dest) == sha == summary["sha256"]
    assert 0 < first_run < size
    assert summary["rehashed_bytes"] > 0, "the hash state was rebuilt from the partial file"
    assert total_sent <= size + segment, f"refetched {total_sent - size} bytes"
    assert not Path(f"{dest}.part").exists() and not Path(f"{dest}.part.json").exists()
    os.sync()


@pytest.fixture
def direct_io(tmp_path: Path) -> None:
    """Skips a test where this filesystem takes no aligned O_DIRECT write (tmpfs, some others)."""
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        pytest.skip("this platform has no O_DIRECT")
    probe = tmp_path / "direct-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | flag, 0o644)
        try:
            os.pwrite(fd, mmap.mmap(-1, 4096), 0)
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as exc:
        pytest.skip(f"{tmp_path} takes no O_DIRECT writes: {exc}")


@pytest.mark.usefixtures("direct_io")
def test_whole_chunks_are_written_past_the_page_cache(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    tail = SIZE % (64 * KiB)
    with ModelFileServer(root) as server:
        result, _ = fetch(server.url("model.bin"), tmp_path / "a" / "model.bin", sha)
        plain, _ = fetch(
            server.url("model.bin"), tmp_path / "b" / "model.bin", sha, direct_io=False
        )
    assert digest(tmp_path / "a" / "model.bin") == sha == result.sha256
    assert result.direct_bytes == SIZE - tail, "every whole chunk went past the page cache"
    assert digest(tmp_path / "b" / "model.bin") == sha and plain.direct_bytes == 0


@pytest.mark.usefixtures("direct_io")
def test_resume_at_an_odd_offset_realigns_and_mixes_both_kinds_of_write(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, sha = served
    dest = tmp_path / "model.bin"
    with ModelFileServer(root, drop_at=0.5) as server:
        result, _ = fetch(server.url("model.bin"), dest, sha, connections=1)
        sent = server.bytes_sent("model.bin")
    assert (SIZE // 2) % 4096, "the drop must fall at an unaligned offset"
    assert digest(dest) == sha == result.sha256
    assert sent == SIZE, "the bytes read before the drop were kept, none fetched twice"
    # buffered: the chunk cut by the drop, the piece up to the next chunk, and the file's tail
    assert SIZE - result.direct_bytes <= 64 * KiB + SIZE % (64 * KiB)
    assert result.direct_bytes % 4096 == 0
