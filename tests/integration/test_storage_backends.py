"""Every storage backend against a real server: moto's S3, Azurite, and an HTTP PUT receiver.

What a user relies on: the URL in a result fetches the same bytes (checked with plain httpx and
a fresh sha256), input URLs read back, and a store that is down or refusing says so with the
right kind of error. Needs no ComfyUI; Azurite tests skip (with the reason) where npm cannot
install it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from azure.storage.blob import BlobClient

from comfyfleet.storage import (
    AccessDenied,
    AzureBlobStorage,
    HttpPutStorage,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    Storage,
    StorageConfigError,
    StorageSettings,
    StorageUnavailable,
    open_storage,
    read_url,
)
from tests.storage_servers import (
    AzuriteServer,
    PutReceiver,
    S3Server,
    azurite_server,
    down_url,
    moto_s3_server,
    put_receiver,
)

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024

S = TypeVar("S", bound=Storage)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(url: str) -> httpx.Response:
    """What a client of the gateway does with a result URL: a plain GET, no credentials."""
    return httpx.get(url, timeout=30, trust_env=False)


def open_s3(s3: S3Server, **options: object) -> tuple[S3Storage, str]:
    bucket = s3.create_bucket(unique("out"))
    storage = open_storage(s3.settings(bucket, "runs", **options), local_root=Path("unused"))
    assert isinstance(storage, S3Storage)
    return storage, bucket


def open_azure(azurite: AzuriteServer, **options: object) -> tuple[AzureBlobStorage, str]:
    container = azurite.create_container(unique("out"))
    settings = azurite.settings(container, "runs", **options)
    storage = open_storage(settings, local_root=Path("unused"))
    assert isinstance(storage, AzureBlobStorage)
    return storage, container


@contextlib.asynccontextmanager
async def closing(storage: S) -> AsyncIterator[S]:
    try:
        yield storage
    finally:
        await storage.close()


async def roundtrip(storage: Storage) -> None:
    """check, put, fetch the result URL with plain httpx, get, delete."""
    await storage.check()
    data = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes * 1000
    stored = await storage.put("job-1/ComfyUI 00001_.png", data, "image/png")
    assert (stored.size, stored.sha256, stored.content_type) == (len(data), sha(data), "image/png")
    response = fetch(stored.url)
    assert response.status_code == 200
    assert sha(response.content) == stored.sha256
    assert response.headers["content-type"] == "image/png"
    assert await storage.get("job-1/ComfyUI 00001_.png") == data

    await storage.delete("job-1/ComfyUI 00001_.png")
    with pytest.raises(ObjectNotFound):
        await storage.get("job-1/ComfyUI 00001_.png")
    await storage.delete("job-1/ComfyUI 00001_.png")  # twice is fine


async def put_big_file(storage: Storage, tmp_path: Path, mib: int) -> None:
    """put a file of `mib` MiB; the result describes it and its URL serves the same bytes."""
    data = uuid.uuid4().bytes * (mib * MIB // 16)
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    stored = await storage.put("job/video.mp4", source, "video/mp4")
    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert sha(fetch(stored.url).content) == sha(data)


async def missing_container_is_a_settings_error(storage: Storage) -> None:
    """put and check where the bucket or container does not exist: not worth a retry."""
    async with closing(storage):
        with pytest.raises(StorageConfigError, match="does not exist") as caught:
            await storage.put("a.txt", b"x")
        assert not isinstance(caught.value, StorageUnavailable)
        with pytest.raises(StorageConfigError, match="does not exist"):
            await storage.check()


async def reads_back(url: str, data: bytes, settings: StorageSettings) -> None:
    """read_url of `url` (holding `data`) up to the limit; a missing object beside it and a
    missing bucket or container are ObjectNotFound."""
    assert await read_url(url, settings, max_bytes=len(data)) == data
    with pytest.raises(ObjectTooLarge, match=f"limit of {len(data) - 1} bytes"):
        await read_url(url, settings, max_bytes=len(data) - 1)
    missing = url.rpartition("/")[0] + "/none.png"
    with pytest.raises(ObjectNotFound, match=re.escape(missing)):
        await read_url(missing, settings, max_bytes=len(data))
    scheme = url.partition("://")[0]
    with pytest.raises(ObjectNotFound):
        await read_url(f"{scheme}://{unique('none')}/x.png", settings, max_bytes=len(data))


async def stopped_store_is_unavailable(
    storage: Storage, stop: Callable[[], None], says: str, url: str, settings: StorageSettings
) -> None:
    """Once `stop()` stops the server, put, check and read_url of `url` (the URL of the object
    put first) say StorageUnavailable: retry later."""
    async with closing(storage):
        await storage.put("before.txt", b"ok")
        stop()
        with pytest.raises(StorageUnavailable, match=says):
            await storage.put("after.txt", b"lost")
        with pytest.raises(StorageUnavailable):
            await storage.check()
        with pytest.raises(StorageUnavailable):
            await read_url(url, settings, max_bytes=9)


# --- S3 -------------------------------------------------------------------------------------


async def test_s3_put_presigned_get_and_delete(s3: S3Server) -> None:
    storage, bucket = open_s3(s3)
    async with closing(storage):
        await roundtrip(storage)
        stored = await storage.put("job/a.txt", b"hello", "text/plain")
        assert "X-Amz-Signature=" in stored.url
        assert fetch(stored.url.partition("?")[0]).status_code == 403, "private without it"
    with contextlib.closing(s3.client()) as client:
        names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == ["runs/job/a.txt"], "objects live under the prefix"


async def test_s3_big_file_goes_up_in_parts(s3: S3Server, tmp_path: Path) -> None:
    storage, bucket = open_s3(s3, multipart_threshold_bytes=5 * MIB, multipart_chunk_bytes=5 * MIB)
    async with closing(storage):
        await put_big_file(storage, tmp_path, mib=11)
    with contextlib.closing(s3.client()) as client:
        head = client.head_object(Bucket=bucket, Key="runs/job/video.mp4")
    assert head["ETag"].strip('"').endswith("-3"), "a multipart upload of three parts"


async def test_s3_public_base_url_replaces_signing(s3: S3Server) -> None:
    bucket = s3.create_bucket(unique("pub"))
    s3.make_public(bucket)
    settings = s3.settings(bucket, "p", public_base_url=f"{s3.endpoint_url}/{bucket}/")
    async with closing(open_storage(settings, local_root=Path("unused"))) as storage:
        stored = await storage.put("j/a b.txt", b"public", "text/plain")
        assert stored.url == f"{s3.endpoint_url}/{bucket}/p/j/a%20b.txt"
        assert fetch(stored.url).content == b"public"


async def test_s3_missing_bucket_is_a_settings_error(s3: S3Server) -> None:
    storage = open_storage(s3.settings(unique("nobucket")), local_root=Path("unused"))
    await missing_container_is_a_settings_error(storage)


async def test_read_url_s3(s3: S3Server) -> None:
    bucket = s3.create_bucket(unique("in"))
    with contextlib.closing(s3.client()) as client:
        client.put_object(Bucket=bucket, Key="inputs/photo.png", Body=b"p" * 1000)
        client.put_object(Bucket=bucket, Key="inputs/empty", Body=b"")
    settings = s3.settings("unrelated-output-bucket")
    await reads_back(f"s3://{bucket}/inputs/photo.png", b"p" * 1000, settings)
    assert await read_url(f"s3://{bucket}/inputs/empty", settings, max_bytes=0) == b""


async def test_s3_stopped_server_is_unavailable() -> None:
    with moto_s3_server() as server:
        bucket = server.create_bucket("going-away")
        storage = open_storage(server.settings(bucket, attempts=2), local_root=Path("unused"))
        says = "cannot reach the S3 endpoint"
        url = f"s3://{bucket}/before.txt"
        await stopped_store_is_unavailable(storage, server.stop, says, url, server.settings(bucket))


# --- Azure (Azurite) ------------------------------------------------------------------------


async def test_azure_put_sas_get_and_delete(azurite: AzuriteServer) -> None:
    storage, container = open_azure(azurite)
    async with closing(storage):
        await roundtrip(storage)
        stored = await storage.put("job/a.txt", b"hello", "text/plain")
        assert f"/{container}/runs/job/a.txt?" in stored.url
        assert "sig=" in stored.url and "sp=r" in stored.url
        assert fetch(stored.url).content == b"hello"
        tampered = stored.url.replace("sp=r", "sp=rw")
        assert fetch(tampered).status_code == 403, "the SAS really is checked"
        assert fetch(stored.url.partition("?")[0]).status_code != 200, "private without it"


async def test_azure_file_upload_in_blocks(azurite: AzuriteServer, tmp_path: Path) -> None:
    storage, container = open_azure(
        azurite, multipart_threshold_bytes=5 * MIB, multipart_chunk_bytes=5 * MIB
    )
    async with closing(storage):
        await put_big_file(storage, tmp_path, mib=9)
    blob = BlobClient.from_connection_string(
        azurite.connection_string, container, "runs/job/video.mp4"
    )
    with blob:
        committed, _ = blob.get_block_list("committed")
    assert len(committed) == 2, "uploaded as two blocks"


async def test_azure_missing_container_and_wrong_key(azurite: AzuriteServer) -> None:
    missing = open_storage(azurite.settings(unique("none")), local_root=Path("unused"))
    await missing_container_is_a_settings_error(missing)

    container = azurite.create_container(unique("keyed"))
    wrong_key = "d3Jvbmcta2V5LWZvci10aGlzLWFjY291bnQtMDEyMzQ1Njc4OQ=="
    settings = azurite.settings(
        container, azure_connection_string=azurite.connection_string_with(wrong_key)
    )
    async with closing(open_storage(settings, local_root=Path("unused"))) as refused:
        with pytest.raises(AccessDenied) as caught:
            await refused.put("a.txt", b"x")
    assert wrong_key not in str(caught.value)
    assert azurite.account_key not in str(caught.value)


async def test_read_url_az(azurite: AzuriteServer) -> None:
    storage, container = open_azure(azurite)
    async with closing(storage):
        await storage.put("photo.png", b"q" * 500)
    await reads_back(f"az://{container}/runs/photo.png", b"q" * 500, azurite.settings("unrelated"))


async def test_azure_stopped_server_is_unavailable(azurite: AzuriteServer) -> None:
    del azurite  # asked for its skip where Azurite cannot be installed; this test stops its own
    with azurite_server() as server:
        container = server.create_container("going-away")
        storage = open_storage(server.settings(container), local_root=Path("x"))
        says = "cannot reach the Azure blob endpoint"
        url = f"az://{container}/before.txt"
        settings = server.settings(container)
        await stopped_store_is_unavailable(storage, server.stop, says, url, settings)


# --- HTTP PUT -------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[PutReceiver]:
    with put_receiver() as server:
        yield server


def open_http(url: str, **options: object) -> HttpPutStorage:
    values: dict[str, object] = {"url": url, "attempts": 3} | options
    storage = open_storage(StorageSettings.model_validate(values), local_root=Path("unused"))
    assert isinstance(storage, HttpPutStorage)
    storage.retry_backoff_s = 0.01
    return storage


async def test_http_put_file_and_bytes(receiver: PutReceiver, tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer let-me-in"}
    receiver.required_headers = dict(auth)
    async with closing(open_http(receiver.url, http_headers=auth)) as storage:
        await storage.check()
        data = uuid.uuid4().bytes * 200_000
        source = tmp_path / "clip.webm"
        source.write_bytes(data)
        stored = await storage.put("job/clip 1.webm", source, "video/webm")
        assert stored.url == receiver.url + "job/clip%201.webm"
        assert (stored.size, stored.sha256) == (len(data), sha(data))
        body, content_type = receiver.objects["/uploads/job/clip%201.webm"]
        assert sha(body) == sha(data) and content_type == "video/webm"
        put = receiver.puts()[-1]
        assert put.headers["content-length"] == str(len(data))
        assert "transfer-encoding" not in put.headers, "a plain upload with a length"

        await storage.put("job/a.txt", b"abc", "text/plain")
        assert await storage.get("job/a.txt") == b"abc"
        await storage.delete("job/a.txt")
        with pytest.raises(ObjectNotFound):
            await storage.get("job/a.txt")


async def test_http_put_rides_out_two_503s(receiver: PutReceiver) -> None:
    receiver.fail_next = 2
    async with closing(open_http(receiver.url)) as storage:
        stored = await storage.put("job/a.png", b"third time lucky", "image/png")
    assert len(receiver.puts()) == 3
    assert receiver.objects["/uploads/job/a.png"][0] == b"third time lucky"
    assert stored.sha256 == sha(b"third time lucky")


async def test_http_put_gives_up_on_a_server_that_keeps_failing(receiver: PutReceiver) -> None:
    receiver.fail_next = 100
    async with closing(open_http(receiver.url)) as storage:
        with pytest.raises(StorageUnavailable, match="answered 503"):
            await storage.put("job/a.png", b"x")
    assert len(receiver.puts()) == 3
    assert receiver.objects == {}


async def test_http_put_refused_credentials_are_not_retried(receiver: PutReceiver) -> None:
    receiver.required_headers = {"Authorization": "Bearer right"}
    wrong = {"Authorization": "Bearer wrong"}
    async with closing(open_http(receiver.url, http_headers=wrong)) as storage:
        with pytest.raises(AccessDenied) as caught:
            await storage.put("job/a.png", b"x")
        with pytest.raises(AccessDenied):
            await storage.check()
    assert len(receiver.puts()) == 1
    assert "wrong" not in str(caught.value)


async def test_http_put_to_a_server_that_is_down() -> None:
    async with closing(open_http(down_url("/uploads/"))) as storage:
        with pytest.raises(StorageUnavailable, match="cannot reach the HTTP storage"):
            await storage.put("job/a.png", b"x")
        with pytest.raises(StorageUnavailable):
            await storage.check()
