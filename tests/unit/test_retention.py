"""Retention on the in-memory stores and real folders: what is past its limit goes, what a
queued or running job needs stays whatever its age, a dry run lists exactly what a real run then
removes, the size cap takes the oldest output folders first, and two processes take turns."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

import pytest

from comfyfleet.assets import AssetNotFound, AssetStore
from comfyfleet.config import load_settings
from comfyfleet.errors import ConfigError
from comfyfleet.jobs import MemoryJobStore, MemoryRegistry, NewJob, StoredFrame
from comfyfleet.retention import (
    Disk,
    Kind,
    PruneBusy,
    Pruner,
    Reason,
    Records,
    Report,
    RetentionSettings,
    RetentionTask,
    named_assets,
)
from comfyfleet.retention._files import output_entries, remove_unchanged
from comfyfleet.webhooks import DeliveryState, MemoryOutbox, NewDelivery
from tests.event_loop import run

DAY = 86400.0
NOW = time.time()
PNG = b"\x89PNG\r\n\x1a\n"
LIMITS = RetentionSettings(jobs="30d", inputs="7d", outputs="30d", temp="1d", previews="1h")


def stamp(path: Path, days_ago: float) -> None:
    """Make `path` (and, for a folder, all it holds) last written `days_ago`."""
    at = NOW - days_ago * DAY
    for each in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(each, (at, at))


class World:
    """A memory store, outbox and registry, and a workspace's folders on disk."""

    def __init__(self, root: Path, limits: RetentionSettings = LIMITS) -> None:
        self.root = root
        self.store = MemoryJobStore()
        self.outbox = MemoryOutbox()
        self.registry = MemoryRegistry()
        self.assets = AssetStore(root / "input")
        self.output = root / "output"
        self.output.mkdir(parents=True)
        self.temp = root / "instances" / "0" / "temp"
        self.temp.mkdir(parents=True)
        self.pruner = Pruner(
            limits,
            self.store,
            Records(self.store, self.outbox, self.registry),
            Disk(self.assets, self.output, lambda: [self.temp], shown_from=root),
            clock=lambda: NOW,
        )

    async def asset(self, data: bytes, days_ago: float) -> str:
        asset, _ = await self.assets.add_bytes(PNG + data)
        stamp(self.assets.path(asset.id), days_ago)
        return asset.id

    async def job(self, job_id: str, inputs: list[str], ended_days_ago: float | None) -> None:
        """A job naming `inputs`; finished that long ago, or left queued (None)."""
        graph = {
            str(i): {"class_type": "LoadImage", "inputs": {"image": self.assets.comfy_name(a)}}
            for i, a in enumerate(inputs)
        }
        await self.store.enqueue(NewJob(id=job_id, workflow=graph), now=NOW - 60 * DAY)
        if ended_days_ago is not None:
            await self.store.cancel(job_id, now=NOW - ended_days_ago * DAY)

    def output_folder(self, name: str, size: int, days_ago: float) -> Path:
        folder = self.output / name
        folder.mkdir()
        (folder / "image.png").write_bytes(b"x" * size)
        stamp(folder, days_ago)
        return folder

    async def relay_all(self) -> None:
        """The webhook relay has passed every event so far (as it does in a running fleet)."""
        cursor = await self.outbox.relay_cursor()
        await self.outbox.relay(cursor, await self.store.latest_event_seq(), [], now=NOW)


async def mixed(world: World) -> dict[str, str]:
    """Old finished jobs, a recent one, a queued and a running one, with inputs and outputs."""
    a = {
        name: await world.asset(name.encode(), days)
        for name, days in [("old", 20), ("queued_in", 20), ("running_in", 20), ("fresh", 1)]
    }
    await world.job("old-1", [a["old"]], ended_days_ago=40)
    await world.job("old-2", [a["old"]], ended_days_ago=35)
    await world.job("recent", [a["fresh"]], ended_days_ago=2)
    await world.job("running", [a["running_in"]], ended_days_ago=None)
    assert (await world.store.claim("w", lease_s=1e9)) is not None  # the oldest queued: running
    await world.job("queued", [a["queued_in"]], ended_days_ago=None)
    await world.relay_all()
    for name, days in [("old-1", 40), ("old-2", 35), ("recent", 2), ("running", 50)]:
        world.output_folder(name, 1000, days)
    world.output_folder("queued", 10, 45)  # an earlier attempt's files
    old_temp = world.temp / "temp" / "preview_0001.png"
    old_temp.parent.mkdir()
    old_temp.write_bytes(b"t" * 7)
    stamp(old_temp, 3)
    (world.temp / "new.png").write_bytes(b"n")
    return a


def names(report: Report, kind: Kind) -> list[str]:
    return [item.name for item in report.of(kind)]


def test_a_prune_removes_only_what_is_old_and_not_needed_by_a_live_job(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        a = await mixed(world)
        dry = await world.pruner.run(dry_run=True)
        assert names(dry, Kind.JOBS) == ["old-1", "old-2"]
        assert names(dry, Kind.INPUTS) == [world.assets.get(a["old"]).file_name]
        assert names(dry, Kind.OUTPUTS) == ["old-1", "old-2"]
        assert names(dry, Kind.TEMP) == ["instances/0/temp/temp/preview_0001.png"]
        assert dry.kept[Kind.INPUTS].count == 2 and dry.kept[Kind.OUTPUTS].count == 2
        assert dry.removed[Kind.EVENTS].count == 4  # queued + cancelled, twice
        # A dry run removed nothing.
        assert (await world.store.get("old-1")).id == "old-1"
        assert world.assets.path(a["old"]).is_file() and (world.output / "old-1").is_dir()

        done = await world.pruner.run(dry_run=False)
        assert done.items == dry.items and done.removed == dry.removed
        for job_id in ("recent", "running", "queued"):
            await world.store.get(job_id)
        assert {j.id for j in (await world.store.list_jobs())[0]} == {
            "recent",
            "running",
            "queued",
        }
        assert [e for e in await world.store.events_since(0) if e.job_id.startswith("old")] == []
        left = sorted(p.name for p in world.output.iterdir())
        assert left == ["queued", "recent", "running"]
        for name in ("queued_in", "running_in", "fresh"):
            assert world.assets.path(a[name]).read_bytes() == PNG + name.encode()
        with pytest.raises(AssetNotFound):
            world.assets.get(a["old"])
        assert sorted(p.name for p in world.temp.rglob("*") if p.is_file()) == ["new.png"]
        again = await world.pruner.run(dry_run=False)
        assert again.total.count == 0

    run(scenario())


def test_jobs_whose_events_the_webhook_relay_has_not_passed_wait(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        await world.job("old-1", [], ended_days_ago=40)
        await world.relay_all()
        await world.job("old-2", [], ended_days_ago=40)  # its events are not relayed yet
        report = await world.pruner.run(dry_run=False)
        assert names(report, Kind.JOBS) == ["old-1"]
        assert report.notes == [
            "1 finished jobs wait for the webhook relay to pass their last events"
        ]
        await world.relay_all()
        assert names(await world.pruner.run(dry_run=False), Kind.JOBS) == ["old-2"]

    run(scenario())


def test_spent_deliveries_and_old_frames_go_but_a_live_jobs_frame(tmp_path: Path) -> None:
    limits = RetentionSettings(webhooks_delivered="7d", webhooks_failed="30d", previews="1h")
    world = World(tmp_path, limits)

    async def scenario() -> None:
        batch = [
            NewDelivery(f"m{i}", i, "j", "job.succeeded", "https://x.test", "{}") for i in (1, 2, 3)
        ]
        await world.outbox.relay(0, 3, batch, now=NOW - 40 * DAY)
        await world.outbox.mark_delivered("m1", status=200, now=NOW - 8 * DAY)
        await world.outbox.mark_failed("m2", status=500, error="x", now=NOW - 8 * DAY)
        await world.job("running", [], ended_days_ago=None)
        await world.store.claim("w", lease_s=1e9)
        for job_id in ("running", "gone"):
            await world.registry.put_preview(
                StoredFrame(job_id, "w", 1, "png", b"12345", NOW - 7200)
            )
        report = await world.pruner.run(dry_run=False)
        assert report.removed[Kind.WEBHOOKS_DELIVERED].count == 1
        assert report.removed[Kind.WEBHOOKS_FAILED].count == 0  # failed 8 days ago: kept 30
        assert (report.removed[Kind.PREVIEWS].count, report.removed[Kind.PREVIEWS].bytes) == (1, 5)
        rows, _ = await world.outbox.list_deliveries()
        assert sorted((r.id, r.state) for r in rows) == [
            ("m2", DeliveryState.FAILED),
            ("m3", DeliveryState.PENDING),
        ]
        frames = await world.registry.previews(["running", "gone"], since=0)
        assert [f.job_id for f in frames] == ["running"]

    run(scenario())


def test_the_size_cap_removes_the_oldest_output_folders_first(tmp_path: Path) -> None:
    world = World(tmp_path, RetentionSettings(outputs=None, outputs_max_bytes=2500))

    async def scenario() -> None:
        await world.job("running", [], ended_days_ago=None)
        await world.store.claim("w", lease_s=1e9)
        for name, days in [("a", 5), ("running", 9), ("b", 4), ("c", 3), ("d", 1)]:
            world.output_folder(name, 1000, days)
        dry = await world.pruner.run(dry_run=True)
        # 5000 bytes for a cap of 2500: the oldest go until 2000 are left; the live job's
        # folder, the oldest of all, stays.
        assert names(dry, Kind.OUTPUTS) == ["a", "b", "c"]
        assert {item.reason for item in dry.of(Kind.OUTPUTS)} == {Reason.SIZE_CAP}
        done = await world.pruner.run(dry_run=False)
        assert names(done, Kind.OUTPUTS) == ["a", "b", "c"]
        assert sorted(p.name for p in world.output.iterdir()) == ["d", "running"]
        small = World(tmp_path / "small", RetentionSettings(outputs=None, outputs_max_bytes=10))
        await small.job("running", [], ended_days_ago=None)
        await small.store.claim("w", lease_s=1e9)
        small.output_folder("running", 1000, 9)
        over = await small.pruner.run(dry_run=False)
        assert over.total.count == 0 and "over its cap of 10" in over.notes[0]

    run(scenario())


def test_a_folder_written_to_after_it_was_listed_stays(tmp_path: Path) -> None:
    output = tmp_path / "output"
    for name in ("written", "untouched"):
        (output / name).mkdir(parents=True)
        (output / name / "image.png").write_bytes(b"x")
        stamp(output / name, 40)
    written, untouched = sorted(output_entries(output), key=lambda e: e.name, reverse=True)
    (output / "written" / "late.png").write_bytes(b"late")  # a job with that id writes now
    assert not remove_unchanged(written)
    assert sorted(p.name for p in (output / "written").iterdir()) == ["image.png", "late.png"]
    assert remove_unchanged(untouched)
    assert sorted(p.name for p in output.iterdir()) == ["written"]  # nothing left aside


def test_assets_named_anywhere_in_a_graph_are_found() -> None:
    digest = "ab" * 32
    graph = {
        "1": {"inputs": {"image": f"comfyfleet-assets/{digest}.png [input]"}},
        "2": {"inputs": {"list": [f"asset:sha256:{digest.upper()[:64]}"], "n": 3}},
        "3": {"inputs": {"text": f"comfyfleet-assets/{digest}0.png"}},  # 65 hex: not an id
    }
    assert named_assets(graph) == {digest}


def test_settings_take_durations_and_sizes_and_name_a_bad_value(tmp_path: Path) -> None:
    (tmp_path / "comfyfleet.yaml").write_text(
        "retention:\n  jobs: 2w\n  outputs: 36h\n  outputs_max_bytes: 1.5GiB\n  inputs: off\n"
    )
    settings = load_settings({"workspace": tmp_path}).retention
    assert (settings.jobs, settings.outputs, settings.inputs) == (14 * DAY, 36 * 3600.0, None)
    assert settings.outputs_max_bytes == int(1.5 * 1024**3)
    (tmp_path / "comfyfleet.yaml").write_text("retention:\n  jobs: 30x\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"workspace": tmp_path})
    assert "setting 'retention.jobs'" in info.value.message
    assert "'30x' is not a duration" in info.value.message
    (tmp_path / "comfyfleet.yaml").write_text("retention:\n  outputs_max_bytes: -5GB\n")
    with pytest.raises(ConfigError, match=r"retention\.outputs_max_bytes.*not a size"):
        load_settings({"workspace": tmp_path})


def test_processes_take_turns_for_the_records_and_for_the_files(tmp_path: Path) -> None:
    world = World(tmp_path)

    def task(holder: str) -> RetentionTask:
        lock = tmp_path / "state" / "retention.lock"
        return RetentionTask(world.pruner, world.registry, holder, lock_file=lock, interval_s=60)

    async def scenario() -> None:
        await world.job("old", [], ended_days_ago=40)
        await world.relay_all()
        world.output_folder("old", 10, 40)
        # Real time, as the task leads by: NOW was taken when this module was imported.
        assert await world.registry.lead("retention", "other", ttl_s=60)
        # Another process prunes the records: this one only its files.
        report = await task("me").run_once()
        assert (names(report, Kind.JOBS), names(report, Kind.OUTPUTS)) == ([], ["old"])
        world.output_folder("old2", 10, 40)
        lock = tmp_path / "state" / "retention.lock"
        with lock.open("a") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a process sharing the workspace prunes
            skipped = await task("me").run_once()
            assert skipped.total.count == 0 and skipped.notes
            with pytest.raises(PruneBusy, match="another comfyfleet process is pruning"):
                await task("gc").run_once(wait_s=0.3)
        await world.registry.resign("retention", "other")
        report = await task("me").run_once()
        assert (names(report, Kind.JOBS), names(report, Kind.OUTPUTS)) == (["old"], ["old2"])
        assert await world.registry.lead("retention", "third", ttl_s=60)  # given up after it

    run(scenario())


def test_the_periodic_task_prunes_every_interval(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        lock = tmp_path / "state" / "retention.lock"
        task = RetentionTask(
            world.pruner, world.registry, "me", lock_file=lock, interval_s=0.2, first_after_s=0
        )
        task.start()
        try:
            world.output_folder("first", 10, 40)
            await asyncio.sleep(0.5)
            assert not (world.output / "first").exists()
            world.output_folder("second", 10, 40)
            await asyncio.sleep(0.5)
            assert not (world.output / "second").exists()
        finally:
            await task.stop()

    run(scenario())


def test_a_report_serialises_every_kind(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        await mixed(world)
        data = (await world.pruner.run(dry_run=True)).to_dict()
        assert data["dry_run"] is True and list(data["kinds"]) == [str(k) for k in Kind]
        assert data["kinds"]["jobs"]["limit_s"] == 30 * DAY
        assert [i["name"] for i in data["kinds"]["outputs"]["items"]] == ["old-1", "old-2"]
        assert data["kinds"]["inputs"]["kept"] == {"count": 2, "bytes": 2 * len(PNG) + 9 + 10}
        assert "items" not in data["kinds"]["events"]
        assert data["total"]["count"] == sum(k["count"] for k in data["kinds"].values())

    run(scenario())


def test_the_readme_retention_example_is_valid_settings(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Retention\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "comfyfleet.yaml").write_text(example, encoding="utf-8")
    settings = load_settings({"workspace": tmp_path}).retention
    assert settings == RetentionSettings()  # the example shows the defaults
    assert (settings.interval, settings.jobs, settings.outputs) == (3600.0, 30 * DAY, None)
