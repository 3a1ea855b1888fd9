"""`s3://` and `az://` model sources against real servers (moto, Azurite): a model library built
from settings reads them with the storage credentials, resumes from a partial file, verifies the
sha256, and says clearly when the object is missing or the store is down."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import pytest

from comfyfleet.config import load_settings
from comfyfleet.models import (
    DownloadError,
    DownloadItem,
    DownloadResult,
    ModelLibrary,
    SourceNotFound,
)
from comfyfleet.models._ranges import RangeSet
from comfyfleet.models._state import PartState, part_path, save_state
from comfyfleet.storage import StorageSettings
from tests.storage_servers import (
    AzuriteServer,
    S3Server,
    down_url,
)

SIZE = 3 * 1024 * 1024 + 77


def model_bytes(seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (SIZE // len(block) + 1))[:SIZE]


def library(tmp_path: Path, storage: StorageSettings) -> ModelLibrary:
    """A library built the way `serve` and `comfyfleet models` build theirs."""
    settings = load_settings(
        overrides={
            "workspace": str(tmp_path / "ws"),
            "storage": storage.model_dump(),
            "models": {"free_space_margin_bytes": 0, "retries": 0},
        }
    )
    return ModelLibrary.from_settings(settings)


def download(lib: ModelLibrary, source: str, dest: Path, sha: str) -> DownloadResult:
    return asyncio.run(lib.downloader.download(DownloadItem(source, dest, sha256=sha)))


def put_s3(s3: S3Server, bucket: str, key: str, data: bytes) -> None:
    with contextlib.closing(s3.client()) as client:
        client.put_object(Bucket=bucket, Key=key, Body=data)


def stored(s3: S3Server, tmp_path: Path, bucket: str, key: str, data: bytes) -> ModelLibrary:
    """`data` put at s3://bucket/key, and a library that reads that bucket."""
    put_s3(s3, s3.create_bucket(bucket), key, data)
    return library(tmp_path, s3.settings(bucket))


def leave_partial(dest: Path, source: str, data: bytes, etag: str | None = None) -> None:
    """What a download killed after `data` leaves behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part_path(dest).write_bytes(data)
    save_state(dest, PartState(source, etag=etag, ranges=RangeSet([(0, len(data))])))


def test_s3_source_downloads_and_verifies(s3: S3Server, tmp_path: Path) -> None:
    data = model_bytes(1)
    lib = stored(s3, tmp_path, "models-a", "sd/tiny.safetensors", data)
    dest = lib.folders.target("checkpoints", "tiny.safetensors")
    sha = hashlib.sha256(data).hexdigest()
    result = download(lib, "s3://models-a/sd/tiny.safetensors", dest, sha)
    assert dest.read_bytes() == data and result.sha256 == sha and result.fetched_bytes == SIZE


def test_s3_source_resumes_from_the_partial_file(s3: S3Server, tmp_path: Path) -> None:
    data = model_bytes(2)
    lib = stored(s3, tmp_path, "models-b", "big.safetensors", data)
    dest = lib.folders.target("checkpoints", "big.safetensors")
    source = "s3://models-b/big.safetensors"
    half = SIZE // 2
    leave_partial(dest, source, data[:half])
    result = download(lib, source, dest, hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data
    assert result.fetched_bytes == SIZE - half, "only the missing half came from the store"
    assert result.rehashed_bytes == half, "the kept half was hashed from disk"


def test_a_replaced_s3_object_restarts_from_zero_and_says_so(s3: S3Server, tmp_path: Path) -> None:
    old, new = model_bytes(4), model_bytes(5)
    lib = stored(s3, tmp_path, "models-e", "v.safetensors", old)
    dest = lib.folders.target("checkpoints", "v.safetensors")
    source = "s3://models-e/v.safetensors"
    with contextlib.closing(s3.client()) as client:
        etag = client.head_object(Bucket="models-e", Key="v.safetensors")["ETag"]
    leave_partial(dest, source, old[: SIZE // 2], etag)  # a download of the old object, cut off
    put_s3(s3, "models-e", "v.safetensors", new)  # replaced in the store meanwhile
    result = download(lib, source, dest, hashlib.sha256(new).hexdigest())
    assert dest.read_bytes() == new and result.fetched_bytes == SIZE
    assert any("changed since the partial download" in note for note in result.notes)


def test_missing_s3_object_names_it(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.create_bucket("models-c")
    lib = library(tmp_path, s3.settings(bucket))
    dest = lib.folders.target("loras", "nothing.safetensors")
    with pytest.raises(SourceNotFound) as caught:
        download(lib, f"s3://{bucket}/nothing.safetensors", dest, "0" * 64)
    assert "nothing.safetensors" in caught.value.message
    assert not dest.exists()


def test_store_down_is_a_retryable_error(s3: S3Server, tmp_path: Path) -> None:
    lib = library(tmp_path, s3.settings("models-d", endpoint_url=down_url()))
    dest = lib.folders.target("loras", "x.safetensors")
    with pytest.raises(DownloadError) as caught:
        download(lib, "s3://models-d/x.safetensors", dest, "0" * 64)
    assert caught.value.retryable, caught.value
    assert "S3" in caught.value.message and not dest.exists()


def test_azure_source_downloads_and_verifies(azurite: AzuriteServer, tmp_path: Path) -> None:
    container = azurite.create_container("models")
    data = model_bytes(3)
    storage = azurite.settings(container)
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    with contextlib.closing(service):
        service.get_blob_client(container, "vae/tiny.safetensors").upload_blob(data)
    lib = library(tmp_path, storage)
    dest = lib.folders.target("vae", "tiny.safetensors")
    sha = hashlib.sha256(data).hexdigest()
    result = download(lib, f"az://{container}/vae/tiny.safetensors", dest, sha)
    assert dest.read_bytes() == data and result.sha256 == sha
