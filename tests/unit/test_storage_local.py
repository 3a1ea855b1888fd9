"""The two backends that live in the package: local disk (the default) and memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyfleet.storage import (
    InvalidKey,
    LocalStorage,
    MemoryStorage,
    ObjectNotFound,
    Storage,
    StorageError,
    StorageUnavailable,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "out", "/v1/outputs/")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_put_bytes_writes_the_file_and_describes_it(local: LocalStorage) -> None:
    data = b"\x89PNG fake image bytes"
    stored = await local.put("job-1/img 1.png", data, "image/png")
    assert (local.root / "job-1" / "img 1.png").read_bytes() == data
    assert stored.key == "job-1/img 1.png"
    assert stored.url == "/v1/outputs/job-1/img%201.png"
    assert (stored.content_type, stored.size, stored.sha256) == ("image/png", len(data), sha(data))
    assert await local.get("job-1/img 1.png") == data


async def test_put_file_streams_it_and_hashes_what_was_copied(
    local: LocalStorage, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 9000  # a few chunks
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    stored = await local.put("job/video.mp4", source, "video/mp4")
    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert (local.root / "job" / "video.mp4").read_bytes() == data
    assert source.exists(), "the source is copied, not moved"


async def test_put_replaces_atomically_and_leaves_no_temporary_files(local: LocalStorage) -> None:
    await local.put("job/a.txt", b"old")
    await local.put("job/a.txt", b"new")
    assert await local.get("job/a.txt") == b"new"
    assert sorted(p.name for p in (local.root / "job").iterdir()) == ["a.txt"]


async def test_files_get_ordinary_permissions(local: LocalStorage) -> None:
    await local.put("a.txt", b"x")
    mode = (local.root / "a.txt").stat().st_mode & 0o777
    assert mode & 0o600 == 0o600
    assert mode & 0o044, "readable by the group or others, like any file written with a umask"


async def test_a_failed_put_leaves_nothing_behind(local: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read the file to store"):
        await local.put("job/missing.png", tmp_path / "nope.png")
    assert not (local.root / "job" / "missing.png").exists()
    assert list((local.root / "job").iterdir()) == []


async def test_a_key_that_is_a_folder_is_an_error(local: LocalStorage) -> None:
    await local.put("job/a/b.png", b"x")
    with pytest.raises(StorageError, match="cannot write"):
        await local.put("job/a", b"y")
    assert await local.get("job/a/b.png") == b"x"


async def test_get_and_delete_of_missing_objects(local: LocalStorage) -> None:
    with pytest.raises(ObjectNotFound, match=r"'job/none\.png'"):
        await local.get("job/none.png")
    await local.delete("job/none.png")  # not an error
    await local.put("job/x.png", b"x")
    await local.delete("job/x.png")
    with pytest.raises(ObjectNotFound):
        await local.get("job/x.png")


@pytest.mark.parametrize("key", ["../escape.txt", "/abs.txt", "a\\b.txt", "a\x00b"])
async def test_unsafe_keys_never_touch_the_disk(
    local: LocalStorage, tmp_path: Path, key: str
) -> None:
    with pytest.raises(InvalidKey):
        await local.put(key, b"x")
    with pytest.raises(InvalidKey):
        await local.get(key)
    assert not (tmp_path / "escape.txt").exists()
    assert not local.root.exists()


async def test_check_creates_the_root(local: LocalStorage) -> None:
    await local.check()
    assert local.root.is_dir()


async def test_check_fails_clearly_when_the_root_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    storage = LocalStorage(blocker)
    with pytest.raises(StorageError, match="cannot create the output folder") as caught:
        await storage.check()
    assert not isinstance(caught.value, StorageUnavailable)


async def test_the_default_url_is_the_key_itself(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    stored = await storage.put("j/a b.png", b"x")
    assert stored.url == "j/a%20b.png"


async def test_memory_storage_keeps_the_same_rules(tmp_path: Path) -> None:
    storage: Storage = MemoryStorage()
    source = tmp_path / "a.bin"
    source.write_bytes(b"abc")
    stored = await storage.put("j/a.bin", source, "application/x-test")
    assert (stored.url, stored.size, stored.sha256) == ("memory://j/a.bin", 3, sha(b"abc"))
    assert await storage.get("j/a.bin") == b"abc"
    with pytest.raises(InvalidKey):
        await storage.put("../x", b"")
    await storage.delete("j/a.bin")
    with pytest.raises(ObjectNotFound):
        await storage.get("j/a.bin")


async def test_memory_storage_can_be_told_to_fail() -> None:
    storage = MemoryStorage()
    storage.fail = StorageUnavailable("store down on purpose")
    with pytest.raises(StorageUnavailable):
        await storage.put("a", b"x")
    with pytest.raises(StorageUnavailable):
        await storage.check()
    storage.fail = None
    await storage.put("a", b"x")
    await storage.close()
    assert storage.closed
