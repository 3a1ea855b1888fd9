"""The asset store: what a file is, one copy per content, atomic writes, limits, safe names."""

from __future__ import annotations

import hashlib
import io
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyfleet.assets import (
    ASSETS_FOLDER,
    AssetNotFound,
    AssetSettings,
    AssetStore,
    MediaInputError,
    sniff,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def image_bytes(fmt: str) -> bytes:
    """A real 8x8 image written by Pillow in `fmt`."""
    image_module = pytest.importorskip("PIL.Image", reason="Pillow makes the real image files")
    out = io.BytesIO()
    image_module.new("RGB", (8, 8), (200, 30, 40)).save(out, format=fmt)
    return out.getvalue()


def wav_bytes() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 80)
    return out.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def ebml(doc_type: bytes) -> bytes:
    doc = b"\x42\x82" + bytes([0x80 | len(doc_type)]) + doc_type
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(doc)]) + doc + b"\x18\x53\x80\x67"


MEDIA = [
    ("PNG", "image/png", "png"),
    ("JPEG", "image/jpeg", "jpg"),
    ("WEBP", "image/webp", "webp"),
    ("GIF", "image/gif", "gif"),
    ("BMP", "image/bmp", "bmp"),
    ("TIFF", "image/tiff", "tiff"),
]

HEADERS = [
    (box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41") + box(b"free", b""), "video/mp4", "mp4"),
    (box(b"ftyp", b"qt  \x00\x00\x02\x00qt  ") + box(b"moov", b""), "video/quicktime", "mov"),
    (box(b"moov", b"\x00" * 16), "video/quicktime", "mov"),
    (box(b"ftyp", b"M4A \x00\x00\x00\x00M4A mp42"), "audio/mp4", "m4a"),
    (ebml(b"webm"), "video/webm", "webm"),
    (ebml(b"matroska"), "video/x-matroska", "mkv"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 20, "audio/mpeg", "mp3"),
    (b"\xff\xfb\x90\x64" + b"\x00" * 40, "audio/mpeg", "mp3"),  # a bare MPEG-1 layer III frame
    (b"fLaC\x00\x00\x00\x22" + b"\x00" * 34, "audio/flac", "flac"),
    (b"OggS\x00\x02" + b"\x00" * 40, "audio/ogg", "ogg"),
]


@pytest.mark.parametrize(("fmt", "content_type", "ext"), MEDIA)
def test_real_images_are_recognised(fmt: str, content_type: str, ext: str) -> None:
    media = sniff(image_bytes(fmt))
    assert (media.content_type, media.ext) == (content_type, ext)


def test_real_wav_is_recognised() -> None:
    assert sniff(wav_bytes()).ext == "wav"


@pytest.mark.parametrize(("head", "content_type", "ext"), HEADERS)
def test_container_headers_are_recognised(head: bytes, content_type: str, ext: str) -> None:
    media = sniff(head)
    assert (media.content_type, media.ext) == (content_type, ext)


@pytest.mark.parametrize(
    "head",
    [
        b"<html><body>not an image</body></html>",
        b"BM" + b"plain text that starts like a bitmap",
        b"\xff\xf1\x50\x80",  # AAC ADTS, not layer III
        b"RIFF\x00\x00\x00\x00XXXX",
        b"",
    ],
)
def test_unknown_content_is_octet_stream(head: bytes) -> None:
    media = sniff(head)
    assert (media.content_type, media.ext, media.known) == (
        "application/octet-stream",
        "bin",
        False,
    )


async def test_add_bytes_names_the_file_by_hash_and_sniffed_type(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    data = image_bytes("PNG")
    asset, created = await store.add_bytes(data, filename="holiday.jpg")
    digest = hashlib.sha256(data).hexdigest()
    assert created
    assert asset.id == asset.sha256 == digest
    assert asset.content_type == "image/png"  # the bytes decide, not the client's name
    assert asset.filename == "holiday.jpg"
    assert asset.size == len(data)
    assert asset.comfy_name == f"{ASSETS_FOLDER}/{digest}.png"
    assert store.comfy_name(digest) == asset.comfy_name
    assert store.path(digest) == tmp_path / ASSETS_FOLDER / f"{digest}.png"
    assert store.path(digest).read_bytes() == data
    assert store.get(digest) == asset


async def test_the_same_bytes_are_stored_once(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    data = wav_bytes()
    first, created_first = await store.add_bytes(data, filename="a.wav")
    second, created_second = await store.add_bytes(data, filename="b.wav")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 7):
            yield data[start : start + 7]

    third, created_third = await store.add_stream(chunks(), filename="c.wav")
    assert (created_first, created_second, created_third) == (True, False, False)
    assert first == second == third
    assert second.filename == "a.wav"  # the first upload's metadata stays
    assert [p.name for p in (tmp_path / ASSETS_FOLDER).glob("*.wav")] == [first.file_name]


async def test_ids_are_case_insensitive_and_may_say_sha256(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(b"some bytes")
    assert store.get(asset.id.upper()) == asset
    assert store.get(f"sha256:{asset.id}") == asset
    assert asset.ext == "bin"


@pytest.mark.parametrize(
    "bad_id", ["../../etc/passwd", "abc", "g" * 64, "0" * 63, "/" + "0" * 63, "0" * 65]
)
def test_anything_but_a_hash_is_not_an_asset(tmp_path: Path, bad_id: str) -> None:
    store = AssetStore(tmp_path)
    with pytest.raises(AssetNotFound) as caught:
        store.get(bad_id)
    assert caught.value.code == "asset_not_found"
    assert "not an asset id" in caught.value.message


async def test_client_file_names_never_become_paths(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "input")
    asset, _ = await store.add_bytes(b"payload", filename="../../outside\x00\n.png")
    assert asset.filename == "outside.png"
    assert [p for p in tmp_path.rglob("*") if p.is_file() and "outside" in p.name] == []
    assert store.path(asset.id).parent == tmp_path / "input" / ASSETS_FOLDER


async def test_delete_removes_the_asset(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(b"to delete")
    assert store.delete(asset.id) == asset
    with pytest.raises(AssetNotFound):
        store.get(asset.id)
    assert not (tmp_path / ASSETS_FOLDER / asset.file_name).exists()
    with pytest.raises(AssetNotFound):
        store.delete(asset.id)
    again, created = await store.add_bytes(b"to delete")
    assert created and again.id == asset.id


async def test_a_stream_over_the_limit_stops_and_leaves_nothing(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1000

    with pytest.raises(MediaInputError) as caught:
        await store.add_stream(endless(), 10_000)
    assert caught.value.code == "input_too_large"
    assert pulled == 11  # stopped at the first chunk past the limit, not buffered to the end
    assert list((tmp_path / ASSETS_FOLDER).iterdir()) == []


async def test_the_final_file_appears_only_when_complete(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    data = image_bytes("PNG") * 3
    final = tmp_path / ASSETS_FOLDER / f"{hashlib.sha256(data).hexdigest()}.png"
    seen_during: list[list[str]] = []

    async def slow() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100):
            yield data[start : start + 100]
            seen_during.append(sorted(p.name for p in final.parent.iterdir() if p.is_file()))

    asset, _ = await store.add_stream(slow())
    assert store.path(asset.id) == final and final.read_bytes() == data
    assert seen_during
    assert all(names and all(n.startswith(".tmp-") for n in names) for names in seen_during)
    assert sorted(p.name for p in final.parent.iterdir() if p.is_file()) == [final.name]


async def test_a_broken_stream_leaves_nothing(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.add_stream(broken())
    assert list((tmp_path / ASSETS_FOLDER).iterdir()) == []


async def test_limits_and_empty_inputs(tmp_path: Path) -> None:
    store = AssetStore(tmp_path, max_bytes=10)
    with pytest.raises(MediaInputError) as too_big:
        await store.add_bytes(b"x" * 11)
    assert too_big.value.code == "input_too_large"
    assert "10 bytes" in too_big.value.message
    with pytest.raises(MediaInputError) as empty:
        await store.add_bytes(b"")
    assert empty.value.code == "empty_input"

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    with pytest.raises(MediaInputError) as empty_stream:
        await store.add_stream(nothing())
    assert empty_stream.value.code == "empty_input"


def test_a_store_touches_no_disk_until_written(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "input")
    with pytest.raises(AssetNotFound):
        store.get("0" * 64)
    assert not (tmp_path / "input").exists()


def test_settings_defaults_and_validation() -> None:
    settings = AssetSettings()
    assert settings.max_upload_bytes == 100 * 1024 * 1024
    assert (settings.max_redirects, settings.allow_private) == (3, False)
    split = AssetSettings(allowed_networks="10.0.0.0/8, fd00::/8", allowed_hosts="a.internal")  # type: ignore[arg-type]
    assert split.allowed_networks == ("10.0.0.0/8", "fd00::/8")
    assert split.net_policy().host_allowed("a.internal")
    with pytest.raises(ValueError, match="not a CIDR"):
        AssetSettings(allowed_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="frozen"):
        settings.allow_private = True  # type: ignore[misc]


# --- owners -------------------------------------------------------------------------------------


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_each_owner_gets_new_once_and_sees_its_own_file_name(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    data = wav_bytes()
    first, created = await store.add_bytes(data, filename="mine.wav", owner="keyaaaaa")
    assert created and first.filename == "mine.wav"
    again, created = await store.add_stream(chunks_of(data), filename="x.wav", owner="keyaaaaa")
    assert not created and again.filename == "mine.wav"
    # the same bytes from another key: new to that key, under its own name, one file on disk
    other, created = await store.add_stream(chunks_of(data), filename="b.wav", owner="keybbbbb")
    assert created and other.filename == "b.wav" and other.id == first.id
    assert store.get_for(first.id, "keyaaaaa").filename == "mine.wav"
    assert store.owns(first.id, "keybbbbb") and not store.owns(first.id, "keycccc")
    with pytest.raises(AssetNotFound) as info:
        store.get_for(first.id, "keycccc")
    assert info.value.message == AssetNotFound.for_id(first.id).message  # as if it did not exist
    assert len(list(store.folder.glob("*.wav"))) == 1


async def test_an_owner_leaving_keeps_the_bytes_for_the_others(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, _ = await store.add_bytes(wav_bytes(), owner="keyaaaaa")
    await store.add_bytes(wav_bytes(), owner="keybbbbb")
    store.release(asset.id, "keyaaaaa")
    assert not store.owns(asset.id, "keyaaaaa")
    assert store.get_for(asset.id, "keybbbbb").id == asset.id
    with pytest.raises(AssetNotFound):
        store.release(asset.id, "keyaaaaa")  # not theirs any more
    store.release(asset.id, "keybbbbb")  # the last owner: the asset goes
    with pytest.raises(AssetNotFound):
        store.get(asset.id)


async def test_uploads_without_an_owner_belong_to_nobody(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    asset, created = await store.add_bytes(wav_bytes())
    assert created and not store.owns(asset.id, "keyaaaaa")
    _, created = await store.add_bytes(wav_bytes(), owner="keyaaaaa")
    assert created  # new to the key, though the bytes were there
    store.delete(asset.id)  # an admin's delete removes it whoever owns it
    assert not store.owns(asset.id, "keyaaaaa")
    with pytest.raises(AssetNotFound):
        store.get(asset.id)
