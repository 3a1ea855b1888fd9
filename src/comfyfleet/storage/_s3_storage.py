"""`S3Storage`: the `Storage` interface on one bucket and prefix.

Uploads go through boto3's transfer manager, which switches to a multipart upload past
`multipart_threshold_bytes`. It is given a forward-only hashing reader, so each part is read from
the file once and kept in memory for boto3's own retries. Results carry a presigned GET URL
(`presign_expiry_s`), or `public_base_url` + object name when the bucket is served publicly.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from comfyfleet.storage._blob import BlobStorage
from comfyfleet.storage._errors import ObjectNotFound, StorageError
from comfyfleet.storage._s3 import S3, build_client, s3_error
from comfyfleet.storage._settings import StorageSettings
from comfyfleet.storage._source import HashingReader


class S3Storage(BlobStorage):
    """Objects in `s3://bucket/prefix`. `client` is a seam for tests (a boto3 S3 client);
    by default one is built from `settings`."""

    dialect = S3

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: StorageSettings | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(bucket, prefix, settings)
        self._client = client if client is not None else build_client(self.settings)

    def __repr__(self) -> str:
        endpoint = self.settings.endpoint_url or "aws"
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={endpoint!r})"

    @property
    def bucket(self) -> str:
        return self.container

    async def check(self) -> None:
        try:
            await super().check()
        except ObjectNotFound as exc:  # HEAD has no body, so no NoSuchBucket code: just 404
            raise S3.missing_container(self.bucket) from exc

    def _error(self, exc: Exception, name: str) -> StorageError | None:
        return s3_error(exc, self.bucket, name)

    def _signed_url(self, name: str) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": name},
            ExpiresIn=self.settings.presign_expiry_s,
        )
        return url

    def _upload(self, name: str, reader: HashingReader, length: int, content_type: str) -> None:
        from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

        config = TransferConfig(
            multipart_threshold=self.settings.multipart_threshold_bytes,
            multipart_chunksize=self.settings.multipart_chunk_bytes,
        )
        self._client.upload_fileobj(
            reader, self.bucket, name, ExtraArgs={"ContentType": content_type}, Config=config
        )

    def _download(self, name: str) -> bytes:
        with closing(self._client.get_object(Bucket=self.bucket, Key=name)["Body"]) as body:
            data: bytes = body.read()
        return data

    def _delete(self, name: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=name)

    def _check_container(self) -> None:
        self._client.head_bucket(Bucket=self.bucket)
