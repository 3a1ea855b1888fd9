"""Removing unused assets: a file's time is its last use, a use keeps it, and a graph submitted
while its asset is being removed is refused rather than queued with a missing input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from comfyfleet.assets import (
    AssetNotFound,
    AssetResolver,
    AssetStore,
    remove_unused,
    resolve_media,
    stored_files,
)
from comfyfleet.assets import _sweep as sweep

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
DAY = 86400.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def age(store: AssetStore, asset_id: str, days: float) -> None:
    """Make the asset's last use `days` ago."""
    stamp = time.time() - days * DAY
    os.utime(store.path(asset_id), (stamp, stamp))


async def test_files_are_listed_oldest_use_first_with_their_size(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    old, _ = await store.add_bytes(PNG + b"old", owner="key1")
    new, _ = await store.add_bytes(PNG + b"newer!")
    age(store, old.id, 3)
    leftover = store.folder / ".tmp-upload.part"
    leftover.write_bytes(b"half")
    os.utime(leftover, (time.time() - DAY,) * 2)
    files = stored_files(store)
    assert [(f.name, f.asset_id, f.size) for f in files] == [
        (old.file_name, old.id, len(PNG) + 3),
        (".tmp-upload.part", None, 4),
        (new.file_name, new.id, len(PNG) + 6),
    ]
    assert files[0].used_at == pytest.approx(time.time() - 3 * DAY, abs=5)
    assert stored_files(AssetStore(tmp_path / "nothing")) == []


async def test_using_an_asset_or_storing_it_again_stamps_its_time(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(PNG)
    age(store, asset.id, 10)
    store.use(asset.id)
    assert store.path(asset.id).stat().st_mtime == pytest.approx(time.time(), abs=5)
    age(store, asset.id, 10)
    again, created = await store.add_bytes(PNG, owner="key2")
    assert again.id == asset.id and created  # new to key2, the same file
    assert store.path(asset.id).stat().st_mtime == pytest.approx(time.time(), abs=5)
    age(store, asset.id, 10)
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{asset.id}"}}}
    rewritten, _ = await resolve_media(graph, AssetResolver(store))
    assert rewritten["1"]["inputs"]["image"] == asset.comfy_name
    assert store.path(asset.id).stat().st_mtime == pytest.approx(time.time(), abs=5)


async def test_an_unused_asset_goes_with_its_metadata_and_owners(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(PNG, owner="key1")
    age(store, asset.id, 8)
    (file,) = stored_files(store)
    assert remove_unused(store, file, time.time() - 7 * DAY)
    with pytest.raises(AssetNotFound):
        store.get(asset.id)
    assert sorted(p.name for p in store.folder.rglob("*")) == [".meta"]
    assert not remove_unused(store, file, time.time())  # gone already: nothing to do


async def test_an_asset_used_after_it_was_listed_stays(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(PNG)
    age(store, asset.id, 8)
    (file,) = stored_files(store)
    store.use(asset.id)  # a graph naming it is submitted now
    assert not remove_unused(store, file, time.time() - 7 * DAY)
    assert store.get(asset.id) == asset and store.path(asset.id).read_bytes() == PNG


async def test_a_use_while_it_is_being_removed_is_refused_not_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(PNG)
    age(store, asset.id, 8)
    (file,) = stored_files(store)
    refused: list[str] = []
    rename = os.rename

    def rename_then_submit(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        rename(src, dst)
        try:
            store.use(asset.id)  # the submit that comes right after the file was moved
        except AssetNotFound as exc:
            refused.append(exc.message)

    monkeypatch.setattr(sweep.os, "rename", rename_then_submit)
    assert remove_unused(store, file, time.time() - 7 * DAY)
    assert refused == [f"no asset '{asset.id}'"]


async def test_leftovers_go_once_they_are_old(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    store.folder.mkdir(parents=True)
    stale, fresh = store.folder / ".tmp-a.part", store.folder / ".prune-b.png"
    for path in (stale, fresh):
        path.write_bytes(b"x")
    os.utime(stale, (time.time() - 9 * DAY,) * 2)
    files = {f.name: f for f in stored_files(store)}
    cutoff = time.time() - 7 * DAY
    assert remove_unused(store, files[stale.name], cutoff)
    assert not remove_unused(store, files[fresh.name], cutoff)
    assert not stale.exists() and fresh.exists()
