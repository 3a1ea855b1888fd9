"""`AzureBlobStorage`: the `Storage` interface on one container and prefix.

Uploads pass a forward-only hashing reader with the known length: small objects go up in one
request, large ones in blocks that the SDK reads once and keeps for its own retries. Results
carry a read-only SAS URL signed locally with the account key (`presign_expiry_s`), or
`public_base_url` + blob name when the container is served publicly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from comfyfleet.storage._azure import azure_error, build_service, signing_key
from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, StoredObject
from comfyfleet.storage._errors import ObjectNotFound, StorageConfigError, StorageError
from comfyfleet.storage._keys import check_key, check_prefix, quote_key
from comfyfleet.storage._settings import StorageSettings
from comfyfleet.storage._source import check_read_all, open_source

T = TypeVar("T")


class AzureBlobStorage:
    """Objects in `az://container/prefix`. `service` is a seam for tests (a BlobServiceClient);
    by default one is built from `settings`."""

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        settings: StorageSettings | None = None,
        service: Any = None,
    ) -> None:
        self.settings = settings or StorageSettings()
        self.container = container
        self.prefix = check_prefix(prefix)
        self._service = service if service is not None else build_service(self.settings)
        self._container = self._service.get_container_client(container)
        self._signer = signing_key(self._service)
        if self._signer is None and self.settings.public_base_url is None:
            raise StorageConfigError(
                "Azure storage cannot sign read URLs without the account key",
                hint="use a connection string or azure_account_key, or set public_base_url",
            )

    def __repr__(self) -> str:
        return f"AzureBlobStorage(container={self.container!r}, prefix={self.prefix!r})"

    def blob_name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def url_for(self, key: str) -> str:
        name = self.blob_name(key)
        if self.settings.public_base_url is not None:
            return self.settings.public_base_url + quote_key(name)
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        assert self._signer is not None  # checked in __init__
        account, account_key = self._signer
        sas = generate_blob_sas(
            account,
            self.container,
            name,
            account_key=account_key,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(UTC) + timedelta(seconds=self.settings.presign_expiry_s),
        )
        base: str = self._container.url
        return f"{base}/{quote(name, safe='/')}?{sas}"

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        name = self.blob_name(key)
        size, digest = await self._call(lambda: self._upload(name, source, content_type), name)
        return StoredObject(key, self.url_for(key), content_type, size, digest)

    async def get(self, key: str) -> bytes:
        name = self.blob_name(key)
        return await self._call(lambda: self._container.download_blob(name).readall(), name)

    async def delete(self, key: str) -> None:
        name = self.blob_name(key)
        try:
            await self._call(lambda: self._container.delete_blob(name), name)
        except ObjectNotFound:
            return

    async def check(self) -> None:
        await self._call(self._container.get_container_properties, "")

    async def close(self) -> None:
        await asyncio.to_thread(self._service.close)

    def _upload(self, name: str, source: bytes | Path, content_type: str) -> tuple[int, str]:
        from azure.storage.blob import ContentSettings

        reader, expected = open_source(source)
        with reader:
            self._container.upload_blob(
                name,
                reader,
                length=expected,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
            )
        check_read_all(reader, expected, f"az://{self.container}/{name}")
        return reader.size, reader.sha256

    async def _call(self, work: Callable[[], T], name: str) -> T:
        try:
            return await asyncio.to_thread(work)
        except StorageError:
            raise
        except Exception as exc:
            mapped = azure_error(exc, self.container, name)
            if mapped is None:
                raise
            raise mapped from exc
