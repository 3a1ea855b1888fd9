"""`AzureBlobStorage`: the `Storage` interface on one container and prefix.

Uploads pass a forward-only hashing reader with the known length: small objects go up in one
request, large ones in blocks that the SDK reads once and keeps for its own retries. Results
carry a read-only SAS URL signed locally with the account key (`presign_expiry_s`), or
`public_base_url` + blob name when the container is served publicly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from comfyfleet.storage._azure import AZURE, azure_error, build_service, signing_key
from comfyfleet.storage._blob import BlobStorage
from comfyfleet.storage._errors import StorageConfigError, StorageError
from comfyfleet.storage._keys import quote_key
from comfyfleet.storage._settings import StorageSettings
from comfyfleet.storage._source import HashingReader


class AzureBlobStorage(BlobStorage):
    """Objects in `az://container/prefix`. `service` is a seam for tests (a BlobServiceClient);
    by default one is built from `settings`."""

    dialect = AZURE

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        settings: StorageSettings | None = None,
        service: Any = None,
    ) -> None:
        super().__init__(container, prefix, settings)
        self._client = service if service is not None else build_service(self.settings)
        self._blobs = self._client.get_container_client(container)
        self._signer = signing_key(self._client)
        if self._signer is None and self.settings.public_base_url is None:
            raise StorageConfigError(
                "Azure storage cannot sign read URLs without the account key",
                hint="use a connection string or azure_account_key, or set public_base_url",
            )

    def __repr__(self) -> str:
        return f"AzureBlobStorage(container={self.container!r}, prefix={self.prefix!r})"

    def _error(self, exc: Exception, name: str) -> StorageError | None:
        return azure_error(exc, self.container, name)

    def _signed_url(self, name: str) -> str:
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
        base: str = self._blobs.url
        return f"{base}/{quote_key(name)}?{sas}"

    def _upload(self, name: str, reader: HashingReader, length: int, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        self._blobs.upload_blob(
            name,
            reader,
            length=length,
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
        )

    def _download(self, name: str) -> bytes:
        data: bytes = self._blobs.download_blob(name).readall()
        return data

    def _delete(self, name: str) -> None:
        self._blobs.delete_blob(name)

    def _check_container(self) -> None:
        self._blobs.get_container_properties()
