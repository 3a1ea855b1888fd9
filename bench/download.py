"""Download throughput: comfyfleet's downloader (sha256 on) against `curl -o`, same run, same
loopback server, interleaved rounds.

  curl:   curl -s -o OUT URL                       (no hashing, left in the page cache)
  ours:   Downloader().download(URL -> OUT, sha256 verified while streaming, fsynced)
Goal: ours / curl >= 0.9 (median throughput). Also printed: curl followed by an fsync of its file
(the durability ours has before it renames), the bytes ours wrote past the page cache, the
hashing cost (seconds the hasher thread was busy, and bytes it had to read back from disk because
they could not be buffered), and a plain sha256 of the file for scale.

Usage: python bench/download.py [--size-mib 1024] [--rounds 3] [--connections 4]
                                [--no-fsync] [--no-direct-io]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.model_file_server import write_random_file

from comfyfleet.models import Downloader, DownloadItem, DownloadResult, ModelSettings, sha256_file

MiB = 1024 * 1024


def curl_once(url: str, out: Path, *, fsync: bool = False) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True)
    if fsync:
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - started
    out.unlink()
    return seconds


def ours_once(url: str, out: Path, sha: str, settings: ModelSettings) -> DownloadResult:
    result = asyncio.run(Downloader(settings).download(DownloadItem(url, out, sha256=sha)))
    out.unlink()
    return result


def row(name: str, seconds: list[float], size: int) -> float:
    """Print one contender's median time and throughput; returns the throughput (MiB/s)."""
    median = statistics.median(seconds)
    mbps = size / MiB / median
    print(
        f"{name + ':':22}median {median:.2f}s  {mbps:8.0f} MiB/s  (runs: "
        + ", ".join(f"{s:.2f}" for s in seconds)
        + ")"
    )
    return mbps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--checkpoint-mib", type=int, default=32, help="state file interval")
    parser.add_argument(
        "--no-fsync", action="store_true", help="skip the fsync before the final rename (as curl)"
    )
    parser.add_argument(
        "--no-direct-io", action="store_true", help="write through the page cache, as curl does"
    )
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed: nothing to compare with")
    size = args.size_mib * MiB
    settings = ModelSettings(
        connections=args.connections,
        checkpoint_bytes=args.checkpoint_mib * MiB,
        fsync_commit=not args.no_fsync,
        direct_io=not args.no_direct_io,
        free_space_margin_bytes=0,
    )
    with tempfile.TemporaryDirectory(prefix="bench-download-") as scratch:
        root = Path(scratch)
        sha = write_random_file(root / "served" / "model.bin", size, seed=1)
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent.parent / "tests" / "model_file_server.py"),
                str(root / "served"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip() + "/model.bin"
            started = time.perf_counter()
            assert sha256_file(root / "served" / "model.bin") == sha
            plain_hash_s = time.perf_counter() - started
            curl_s: list[float] = []
            synced_s: list[float] = []
            ours: list[DownloadResult] = []
            for _ in range(args.rounds):
                curl_s.append(curl_once(url, root / "curl.bin"))
                ours.append(ours_once(url, root / "ours.bin", sha, settings))
                synced_s.append(curl_once(url, root / "curl.bin", fsync=True))
        finally:
            server.terminate()
            server.wait(10)
    print(f"file: {args.size_mib} MiB on a loopback server, {args.rounds} rounds, interleaved")
    curl_mbps = row("curl -o", curl_s, size)
    ours_mbps = row("comfyfleet (sha256)", [r.seconds for r in ours], size)
    print(f"{'':22}({ours[0].connections} connections)")
    synced_mbps = row("curl -o, then fsync", synced_s, size)
    ratio = ours_mbps / curl_mbps
    verdict = "met" if ratio >= 0.9 else "NOT met"
    print(f"throughput ratio ours/curl: {ratio:.2f}  (goal >= 0.9: {verdict})")
    print(f"ratio ours/(curl + fsync), the same durability: {ours_mbps / synced_mbps:.2f}")
    direct = statistics.median(r.direct_bytes for r in ours) / MiB
    print(f"written past the page cache (O_DIRECT): {direct:.0f} MiB of {args.size_mib} MiB")
    busy = statistics.median(r.hash_busy_s for r in ours)
    readback = statistics.median(r.readback_bytes for r in ours) / MiB
    print(
        f"hashing cost: hasher thread busy {busy:.2f}s per download (in parallel with the"
        f" network), {readback:.0f} MiB read back from disk; a plain sha256 of the file takes"
        f" {plain_hash_s:.2f}s"
    )


if __name__ == "__main__":
    main()
