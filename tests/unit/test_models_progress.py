"""Progress data: speed over a sliding window, the ETA it implies, sizes written for people;
and a streamer source (the s3:// seam) that resumes from the bytes already on disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.models import (
    Downloader,
    DownloadError,
    DownloadItem,
    ModelSettings,
    human_size,
)
from comfyfleet.models._progress import Meter


def test_speed_and_eta_come_from_the_recent_window() -> None:
    now = [0.0]
    meter = Meter(window_s=5.0, clock=lambda: now[0])
    first = meter.progress("f", 0, 1000)
    assert first.speed_bps == 0.0 and first.eta_s is None
    now[0] = 2.0
    second = meter.progress("f", 400, 1000)
    assert (second.speed_bps, second.eta_s, second.fraction) == (200.0, 3.0, 0.4)
    now[0] = 10.0  # the sample at 0s is out of the 5s window: only 2s..10s counts
    third = meter.progress("f", 500, 1000)
    assert (third.speed_bps, third.eta_s) == (12.5, 40.0)


def test_sizes_for_people() -> None:
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 1024**3) == "5.0 GiB"
    assert human_size(3 * 1024**4) == "3.0 TiB"


def test_a_streamer_source_resumes_from_the_bytes_on_disk(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    offsets: list[int] = []

    def flaky(url: str, offset: int) -> Iterator[bytes]:
        assert url == "s3://bucket/key.bin"
        offsets.append(offset)
        yield data[offset : offset + 100_000]
        if len(offsets) == 1:
            raise ConnectionResetError("connection reset by peer")
        yield data[offset + 100_000 :]

    settings = ModelSettings(free_space_margin_bytes=0, checkpoint_bytes=64 * 1024)
    downloader = Downloader(settings, env={}, streamers={"s3": flaky})
    sha = hashlib.sha256(data).hexdigest()
    item = DownloadItem("s3://bucket/key.bin", tmp_path / "key.bin", sha256=sha)
    with pytest.raises(DownloadError) as caught:
        asyncio.run(downloader.download(item))
    assert caught.value.retryable and not item.dest.exists()
    result = asyncio.run(downloader.download(item))
    assert offsets == [0, 100_000], "the second run asked only for what was missing"
    assert result.sha256 == sha and result.fetched_bytes == 200_000
    assert item.dest.read_bytes() == data
