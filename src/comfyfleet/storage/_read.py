"""Reading input URLs that name objects in a store: `s3://bucket/key` and `az://container/blob`.

They are read with the endpoint and credentials of the storage settings (the same account the
outputs go to, or any other the credentials can read), and never past `max_bytes`: the declared
size is checked before the body is read, and the body is cut one byte past the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from comfyfleet.storage._azure import AZURE, azure_error, build_service
from comfyfleet.storage._errors import ObjectTooLarge, StorageConfigError, translated
from comfyfleet.storage._s3 import S3, build_client, s3_error
from comfyfleet.storage._settings import StorageSettings
from comfyfleet.storage._source import CHUNK

READABLE = ("s3://", "az://")


async def read_url(url: str, settings: StorageSettings, *, max_bytes: int) -> bytes:
    """The bytes of the object `url` names. Raises ObjectNotFound (no such bucket, container or
    key), AccessDenied (the credentials may not read it), StorageUnavailable (the store is
    unreachable or busy), ObjectTooLarge (over `max_bytes`), or StorageConfigError (a URL this
    function does not read, or unusable settings)."""
    scheme, container, name = _object_of(url)
    if scheme == "s3":
        return await asyncio.to_thread(_read_s3, settings, container, name, max_bytes)
    return await asyncio.to_thread(_read_azure, settings, container, name, max_bytes)


def stream_url(url: str, settings: StorageSettings, *, offset: int = 0) -> Iterator[bytes]:
    """The bytes of the object `url` names from `offset` on, in chunks, for files too big to
    hold (model files). Blocking: iterate it on a worker thread. Raises as :func:`read_url`
    does, when the first chunk is asked for. `offset` must be below the object's size
    (:func:`object_info` tells it)."""
    scheme, container, name = _object_of(url)
    if scheme == "s3":
        return _stream_s3(settings, container, name, offset)
    return _stream_azure(settings, container, name, offset)


class ObjectInfo(NamedTuple):
    etag: str | None
    """Changes whenever the object's bytes do."""
    size: int | None


def object_info(url: str, settings: StorageSettings) -> ObjectInfo:
    """The ETag and size of the object `url` names (blocking; raises as :func:`read_url`)."""
    scheme, container, name = _object_of(url)
    if scheme == "s3":
        with (
            closing(build_client(settings)) as client,
            translated(lambda exc: s3_error(exc, container, name, reading=True)),
        ):
            head = client.head_object(Bucket=container, Key=name)
            etag, size = head.get("ETag"), head.get("ContentLength")
    else:
        with (
            closing(build_service(settings)) as service,
            translated(lambda exc: azure_error(exc, container, name, reading=True)),
        ):
            properties = service.get_blob_client(container, name).get_blob_properties()
            etag, size = properties.etag, properties.size
    return ObjectInfo(str(etag) if etag else None, int(size) if size is not None else None)


def _object_of(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or container, key) of a URL this module reads."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    container, name = parts.netloc, parts.path.lstrip("/")
    if scheme not in ("s3", "az"):
        raise StorageConfigError(
            f"cannot read input URLs of scheme '{scheme}:' here",
            hint=f"use one of {', '.join(READABLE)}",
        )
    if not container or not name:
        raise StorageConfigError(
            f"'{scheme}://{container}/{name}' does not name an object",
            hint=f"write {scheme}://{'BUCKET' if scheme == 's3' else 'CONTAINER'}/KEY",
        )
    return scheme, container, name


def _stream_s3(settings: StorageSettings, bucket: str, name: str, offset: int) -> Iterator[bytes]:
    def mapped() -> AbstractContextManager[None]:  # one context per block: they are one-shot
        return translated(lambda exc: s3_error(exc, bucket, name, reading=True))

    with closing(build_client(settings)) as client:
        with mapped():
            ranged = {"Range": f"bytes={offset}-"} if offset else {}
            response = client.get_object(Bucket=bucket, Key=name, **ranged)
        with closing(response["Body"]) as body:
            while True:
                with mapped():
                    chunk: bytes = body.read(CHUNK)
                if not chunk:
                    return
                yield chunk


def _stream_azure(
    settings: StorageSettings, container: str, name: str, offset: int
) -> Iterator[bytes]:
    def mapped() -> AbstractContextManager[None]:
        return translated(lambda exc: azure_error(exc, container, name, reading=True))

    with closing(build_service(settings)) as service:
        with mapped():
            blob = service.get_blob_client(container, name)
            chunks = blob.download_blob(offset=offset or None).chunks()
        while True:
            with mapped():
                chunk: bytes | None = next(chunks, None)
            if chunk is None:
                return
            yield chunk


def _read_s3(settings: StorageSettings, bucket: str, name: str, max_bytes: int) -> bytes:
    where = S3.where(bucket, name)
    mapped = translated(lambda exc: s3_error(exc, bucket, name, reading=True))
    with closing(build_client(settings)) as client, mapped:
        response = client.get_object(Bucket=bucket, Key=name)
        with closing(response["Body"]) as body:
            _refuse_over(response.get("ContentLength"), where, max_bytes)
            return _read_capped(body, where, max_bytes)


def _read_azure(settings: StorageSettings, container: str, name: str, max_bytes: int) -> bytes:
    where = AZURE.where(container, name)
    mapped = translated(lambda exc: azure_error(exc, container, name, reading=True))
    with closing(build_service(settings)) as service, mapped:
        blob = service.get_blob_client(container, name)
        _refuse_over(blob.get_blob_properties().size, where, max_bytes)
        data: bytes = blob.download_blob().readall()
        _refuse_over(len(data), where, max_bytes)
        return data


def _refuse_over(size: object, where: str, max_bytes: int) -> None:
    """ObjectTooLarge when `size` (as declared, if the store declared one) is over the limit."""
    if isinstance(size, int) and size > max_bytes:
        raise ObjectTooLarge(where, max_bytes)


def _read_capped(body: Any, where: str, max_bytes: int) -> bytes:
    """Read a streaming body, stopping one byte past the limit."""
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk: bytes = body.read(min(CHUNK, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    _refuse_over(total, where, max_bytes)
    return b"".join(chunks)
