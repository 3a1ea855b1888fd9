"""Retention on a real `comfyfleet serve` (CPU ComfyUI, SQLite store): `comfyfleet gc` removes
what is past its limits and nothing a queued or running job needs, `--dry-run` lists the same
without removing anything, and the output folder's size cap takes the oldest folders first.

Things are made old the way time would: the store's `finished_at` is rewritten and the files'
times are set back, while the server runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config

pytestmark = pytest.mark.comfyui

DAY = 86400.0


def png(shade: int) -> bytes:
    """A valid 8x8 PNG of one grey (no Pillow in the project's venv)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + bytes([shade]) * 24 for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def load_graph(asset_id: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{asset_id}"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def sleeping(graph: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The graph with its image saved only after a FleetSleep of `seconds` (the prefix is the
    sleep's text): a running job that writes nothing to its folder until then."""
    seed = time.time_ns() % 1_000_000_007
    sleep = {"class_type": "FleetSleep", "inputs": {"seconds": seconds, "seed": seed}}
    save = graph["3"] | {"inputs": graph["3"]["inputs"] | {"filename_prefix": ["9", 0]}}
    return graph | {"3": save, "9": sleep}


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("retention"))
    # One instance running one job at a time: a second job stays queued in the store. The
    # periodic prune is off, so only `gc` removes anything here.
    serve_config(
        ws,
        serve={"slots_per_instance": 1},
        retention={"interval": "off", "jobs": "30d", "inputs": "7d", "outputs": "30d"},
    )
    srv = Server(ws, instances=1).start()
    yield srv
    srv.close()


def gc(server: Server, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "comfyfleet", "gc", "-w", str(server.ws), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def upload(server: Server, data: bytes) -> str:
    answer = server.http.post("/v1/assets", content=data, headers={"Content-Type": "image/png"})
    assert answer.status_code == 201, answer.text
    asset_id: str = answer.json()["id"]
    return asset_id


def run_job(server: Server, job_id: str, graph: dict[str, Any]) -> dict[str, Any]:
    answer = server.http.post(
        "/v1/jobs", json={"id": job_id, "workflow": graph}, params={"wait": "true"}
    )
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text
    job: dict[str, Any] = answer.json()
    return job


def start_job(server: Server, job_id: str, graph: dict[str, Any], status: str) -> None:
    answer = server.http.post("/v1/jobs", json={"id": job_id, "workflow": graph})
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 60
    while server.job(job_id)["status"] != status:
        assert time.monotonic() < deadline, server.job(job_id)
        time.sleep(0.1)


def set_back(path: Path, days: float) -> None:
    """Make `path` (a file, or a folder and all it holds) last written `days` ago."""
    at = time.time() - days * DAY
    for each in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(each, (at, at))


def end_long_ago(server: Server, job_ids: list[str], days: float) -> None:
    """Rewrite when the jobs ended, and wait until the webhook relay has passed their events
    (retention keeps a job until then)."""
    db = sqlite3.connect(server.ws / "state" / "jobs.db", isolation_level=None)  # autocommit
    try:
        marks = ",".join("?" * len(job_ids))
        db.execute(
            f"UPDATE jobs SET finished_at = ? WHERE id IN ({marks})",
            [time.time() - days * DAY, *job_ids],
        )
        newest = db.execute(
            f"SELECT max(seq) FROM job_events WHERE job_id IN ({marks})", job_ids
        ).fetchone()[0]
        deadline = time.monotonic() + 30
        while db.execute("SELECT last_event_seq FROM webhook_relay").fetchone()[0] < newest:
            assert time.monotonic() < deadline, "the webhook relay did not move"
            time.sleep(0.2)
    finally:
        db.close()


def older_than(folder: Path, seconds: float) -> set[str]:
    """Names of the entries of `folder` whose newest write is older than `seconds`."""
    cutoff = time.time() - seconds
    found = set()
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        times = [p.stat().st_mtime for p in [entry, *entry.rglob("*")]]
        if max(times) < cutoff:
            found.add(entry.name)
    return found


def test_gc_keeps_what_live_jobs_need_and_removes_everything_else_that_is_old(
    server: Server,
) -> None:
    ws, output = server.ws, server.ws / "output"
    assets_dir = ws / "input" / "comfyfleet-assets"
    ids = {
        name: upload(server, png(shade))
        for shade, name in enumerate(
            ["finished_only", "for_running", "for_queued", "fresh"], start=10
        )
    }
    for job_id in ("old-a", "old-b"):
        run_job(server, job_id, load_graph(ids["finished_only"], job_id))
    run_job(server, "old-c", model_free_graph(7, "old-c"))
    run_job(server, "recent", model_free_graph(8, "recent"))
    start_job(server, "live-running", sleeping(load_graph(ids["for_running"], "r"), 60), "running")
    start_job(server, "live-queued", load_graph(ids["for_queued"], "q"), "queued")
    # Made old: three finished jobs, their folders, every input but the fresh one, and an
    # earlier attempt's files in each live job's folder; a temp file of an instance.
    end_long_ago(server, ["old-a", "old-b", "old-c"], days=40)
    for name in ("old-a", "old-b", "old-c"):
        set_back(output / name, 40)
    for name in ("finished_only", "for_running", "for_queued"):
        set_back(next(assets_dir.glob(f"{ids[name]}.*")), 20)
    for job_id in ("live-running", "live-queued"):
        (output / job_id).mkdir(exist_ok=True)
        (output / job_id / "attempt-1.png").write_bytes(png(99))
        set_back(output / job_id, 45)
    temp = ws / "instances" / "0" / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    (temp / "stale.png").write_bytes(png(1))
    set_back(temp / "stale.png", 3)
    (temp / "now.png").write_bytes(png(2))

    dry = json.loads(gc(server, "--dry-run", "--json"))
    kinds = dry["kinds"]
    finished_only = next(assets_dir.glob(f"{ids['finished_only']}.*")).name
    assert dry["dry_run"] is True
    assert [i["name"] for i in kinds["jobs"]["items"]] == ["old-a", "old-b", "old-c"]
    assert kinds["events"]["count"] >= 9  # queued, running, succeeded at least, each
    assert [i["name"] for i in kinds["inputs"]["items"]] == [finished_only]
    assert kinds["inputs"]["kept"]["count"] == 2  # the live jobs' inputs, as old
    assert sorted(i["name"] for i in kinds["outputs"]["items"]) == ["old-a", "old-b", "old-c"]
    assert kinds["outputs"]["kept"]["count"] == 2  # the live jobs' folders, older still
    assert [i["name"] for i in kinds["temp"]["items"]] == ["instances/0/temp/stale.png"]
    # A dry run removes nothing.
    assert server.http.get("/v1/jobs/old-a").status_code == 200
    assert (assets_dir / finished_only).is_file() and (output / "old-a").is_dir()
    assert (temp / "stale.png").is_file()

    table = gc(server)
    assert "removed" in table and "old-a" in table and "finished jobs" in table

    # Every file a live job needs is still there ...
    for name in ("for_running", "for_queued", "fresh"):
        assert server.http.get(f"/v1/assets/{ids[name]}").status_code == 200
    for job_id in ("live-running", "live-queued"):
        assert (output / job_id / "attempt-1.png").read_bytes() == png(99)
    assert server.job("live-running")["status"] == "running"
    assert server.job("live-queued")["status"] == "queued"
    # ... and nothing else older than its limit is.
    for job_id in ("old-a", "old-b", "old-c"):
        assert server.http.get(f"/v1/jobs/{job_id}").status_code == 404
    assert server.http.get(f"/v1/assets/{ids['finished_only']}").status_code == 404
    assert server.job("recent")["status"] == "succeeded" and (output / "recent").is_dir()
    with sqlite3.connect(ws / "state" / "jobs.db") as db:
        old_jobs = db.execute(
            "SELECT id FROM jobs WHERE finished_at < ?", [time.time() - 30 * DAY]
        ).fetchall()
        orphan_events = db.execute(
            "SELECT count(*) FROM job_events WHERE job_id NOT IN (SELECT id FROM jobs)"
        ).fetchone()[0]
    db.close()
    assert old_jobs == [] and orphan_events == 0
    old_inputs = {
        p.name.split(".")[0]
        for p in assets_dir.iterdir()
        if p.is_file() and p.stat().st_mtime < time.time() - 7 * DAY
    }
    assert old_inputs == {ids["for_running"], ids["for_queued"]}
    assert older_than(output, 30 * DAY) == {"live-running", "live-queued"}
    stale = [p for p in temp.rglob("*") if p.is_file() and p.stat().st_mtime < time.time() - DAY]
    assert stale == [] and (temp / "now.png").is_file()

    # The live jobs then run with their inputs: the queued one reads its file only now.
    assert server.http.post("/v1/jobs/live-running/cancel").status_code == 200
    jobs = server.wait_all(["live-running", "live-queued"], timeout=120)
    assert [j["status"] for j in jobs] == ["cancelled", "succeeded"]
    assert any(o["filename"].startswith("q") for o in jobs[1]["outputs"])


def test_the_output_cap_removes_the_oldest_folders_first_but_a_live_jobs(
    server: Server,
) -> None:
    output = server.ws / "output"
    for i in (1, 2, 3):
        run_job(server, f"cap-{i}", model_free_graph(100 + i, f"cap-{i}"))
    start_job(server, "cap-live", sleeping(model_free_graph(104, "l"), 60), "running")
    (output / "cap-live").mkdir(exist_ok=True)
    (output / "cap-live" / "attempt-1.png").write_bytes(png(50))
    # Oldest first: the live job's folder, then cap-1, cap-2, cap-3, then everything else.
    for name, days in [("cap-live", 300), ("cap-1", 299), ("cap-2", 298), ("cap-3", 297)]:
        set_back(output / name, days)

    def size(name: str) -> int:
        return sum(p.stat().st_size for p in (output / name).rglob("*") if p.is_file())

    total = sum(size(e.name) for e in output.iterdir() if not e.name.startswith("."))
    cap = total - size("cap-1") - size("cap-2")
    env = {
        "COMFYFLEET_RETENTION__OUTPUTS": "off",
        "COMFYFLEET_RETENTION__OUTPUTS_MAX_BYTES": str(cap),
    }
    dry = json.loads(gc(server, "--dry-run", "--json", env=env))
    removed = [(i["name"], i["reason"]) for i in dry["kinds"]["outputs"]["items"]]
    assert removed == [("cap-1", "size cap"), ("cap-2", "size cap")]
    assert (output / "cap-1").is_dir()
    done = json.loads(gc(server, "--json", env=env))
    assert [i["name"] for i in done["kinds"]["outputs"]["items"]] == ["cap-1", "cap-2"]
    assert not (output / "cap-1").exists() and not (output / "cap-2").exists()
    assert (output / "cap-3").is_dir()
    assert (output / "cap-live" / "attempt-1.png").read_bytes() == png(50)
    assert server.http.post("/v1/jobs/cap-live/cancel").status_code == 200
    server.wait_all(["cap-live"], timeout=60)
