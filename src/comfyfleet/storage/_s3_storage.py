"""`S3Storage`: the `Storage` interface on one bucket and prefix.

Uploads go through boto3's transfer manager, which switches to a multipart upload past
`multipart_threshold_bytes`. It is given a forward-only hashing reader, so each part is read from
the file once and kept in memory for boto3's own retries. Results carry a presigned GET URL
(`presign_expiry_s`), or `public_base_url` + object name when the bucket is served publicly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, StoredObject
from comfyfleet.storage._errors import ObjectNotFound, StorageConfigError, StorageError
from comfyfleet.storage._keys import check_key, check_prefix, quote_key
from comfyfleet.storage._s3 import build_client, s3_error
from comfyfleet.storage._settings import StorageSettings
from comfyfleet.storage._source import check_read_all, open_source

T = TypeVar("T")


class S3Storage:
    """Objects in `s3://bucket/prefix`. `client` is a seam for tests (a boto3 S3 client);
    by default one is built from `settings`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: StorageSettings | None = None,
        client: Any = None,
    ) -> None:
        self.settings = settings or StorageSettings()
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        self._client = client if client is not None else build_client(self.settings)

    def __repr__(self) -> str:
        endpoint = self.settings.endpoint_url or "aws"
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={endpoint!r})"

    def object_name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def url_for(self, key: str) -> str:
        name = self.object_name(key)
        if self.settings.public_base_url is not None:
            return self.settings.public_base_url + quote_key(name)
        try:
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=self.settings.presign_expiry_s,
            )
        except Exception as exc:
            mapped = s3_error(exc, self.bucket, name)
            if mapped is None:
                raise
            raise mapped from exc
        return url

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        name = self.object_name(key)
        size, digest = await self._call(lambda: self._upload(name, source, content_type), name)
        return StoredObject(key, self.url_for(key), content_type, size, digest)

    async def get(self, key: str) -> bytes:
        name = self.object_name(key)
        return await self._call(lambda: self._download(name), name)

    async def delete(self, key: str) -> None:
        name = self.object_name(key)
        await self._call(lambda: self._client.delete_object(Bucket=self.bucket, Key=name), name)

    async def check(self) -> None:
        try:
            await self._call(lambda: self._client.head_bucket(Bucket=self.bucket), "")
        except ObjectNotFound as exc:  # HEAD has no body, so no NoSuchBucket code: just 404
            raise StorageConfigError(
                f"S3 bucket '{self.bucket}' does not exist",
                hint="create it, or fix the bucket in the storage URL",
            ) from exc

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    def _upload(self, name: str, source: bytes | Path, content_type: str) -> tuple[int, str]:
        from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

        config = TransferConfig(
            multipart_threshold=self.settings.multipart_threshold_bytes,
            multipart_chunksize=self.settings.multipart_chunk_bytes,
        )
        reader, expected = open_source(source)
        with reader:
            self._client.upload_fileobj(
                reader,
                self.bucket,
                name,
                ExtraArgs={"ContentType": content_type},
                Config=config,
            )
        check_read_all(reader, expected, f"s3://{self.bucket}/{name}")
        return reader.size, reader.sha256

    def _download(self, name: str) -> bytes:
        body = self._client.get_object(Bucket=self.bucket, Key=name)["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    async def _call(self, work: Callable[[], T], name: str) -> T:
        try:
            return await asyncio.to_thread(work)
        except StorageError:
            raise
        except Exception as exc:
            mapped = s3_error(exc, self.bucket, name)
            if mapped is None:
                raise
            raise mapped from exc
