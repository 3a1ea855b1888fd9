"""Azure Blob Storage (and Azurite) through azure-storage-blob, blocking calls in a thread.

The package is optional and imported only when an Azure backend is built. The account comes from
a connection string (settings, else $AZURE_STORAGE_CONNECTION_STRING: the form Azurite and the
portal give), or from an account URL with an account key or a SAS token. Errors are sorted like
S3's: unreachable, 5xx and throttling are `StorageUnavailable`; a missing container and refused
credentials are `StorageConfigError`; messages never carry a key or a SAS token.
"""

from __future__ import annotations

import os
from typing import Any

from comfyfleet.storage._answers import StoreDialect
from comfyfleet.storage._errors import (
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    missing_package,
)
from comfyfleet.storage._settings import StorageSettings

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"

_CREDENTIALS_HINT = (
    "check azure_connection_string (or azure_account_url with azure_account_key or "
    "azure_sas_token) in the storage settings"
)

AZURE = StoreDialect(
    name="Azure",
    scheme="az",
    container="container",
    container_missing="ContainerNotFound",
    busy_codes=frozenset({"ServerBusy", "OperationTimedOut", "InternalError"}),
    missing_codes=frozenset(),
    denied_codes=frozenset(),
    credentials_hint=_CREDENTIALS_HINT,
)


def build_service(settings: StorageSettings) -> Any:
    """A BlobServiceClient for the account the settings name."""
    try:
        from azure.core.credentials import AzureSasCredential
        from azure.storage.blob import BlobServiceClient, ExponentialRetry
    except ImportError as exc:
        raise missing_package("azure-storage-blob", "azure") from exc
    options: dict[str, Any] = {
        "retry_policy": ExponentialRetry(
            initial_backoff=1,
            increment_base=2,
            retry_total=settings.attempts - 1,
            random_jitter_range=1,
        ),
        "max_single_put_size": settings.multipart_threshold_bytes,
        "max_block_size": settings.multipart_chunk_bytes,
        "connection_timeout": settings.connect_timeout_s,
        "read_timeout": settings.read_timeout_s,
    }
    secret = settings.azure_connection_string
    connection_string = (
        secret.get_secret_value() if secret else os.environ.get(CONNECTION_STRING_ENV)
    )
    try:
        if settings.azure_account_url is None and connection_string:
            return BlobServiceClient.from_connection_string(connection_string, **options)
        if settings.azure_account_url is None:
            raise StorageConfigError(
                "Azure storage needs an account",
                hint=f"set {CONNECTION_STRING_ENV} or "
                "azure_connection_string, or azure_account_url in the storage settings",
            )
        credential: Any = None
        if settings.azure_account_key is not None:
            credential = settings.azure_account_key.get_secret_value()
        elif settings.azure_sas_token is not None:
            credential = AzureSasCredential(settings.azure_sas_token.get_secret_value())
        return BlobServiceClient(settings.azure_account_url, credential=credential, **options)
    except ValueError as exc:
        # The SDK's messages describe the shape, not the contents, but stay on the safe side.
        raise StorageConfigError(
            "the Azure connection string or account URL is malformed", hint=_CREDENTIALS_HINT
        ) from exc


def signing_key(service: Any) -> tuple[str, str] | None:
    """(account name, account key) when the client holds a shared key; None otherwise."""
    credential = getattr(service, "credential", None)
    name = getattr(credential, "account_name", None)
    key = getattr(credential, "account_key", None)
    if isinstance(name, str) and isinstance(key, str):
        return name, key
    return None


def azure_error(
    exc: BaseException, container: str, blob: str = "", *, reading: bool = False
) -> StorageError | None:
    """The storage error for an Azure SDK failure on `az://container/blob`; None for anything
    that is not one. When `reading` a URL someone gave, a missing container is ObjectNotFound."""
    try:
        from azure.core import exceptions as ace
    except ImportError:  # pragma: no cover - the SDK is installed if a client exists
        return None
    where = AZURE.where(container, blob)
    if isinstance(exc, ace.ServiceRequestError | ace.ServiceResponseError):
        return StorageUnavailable(
            f"{where}: cannot reach the Azure blob endpoint ({type(exc).__name__})",
            hint="check that the store is up and the account URL is right; the call can be retried",
        )
    if isinstance(exc, ace.HttpResponseError):
        code = str(getattr(exc, "error_code", None) or "")
        status = int(getattr(exc, "status_code", None) or 0)
        return AZURE.answer_error(code, status, container, blob, reading=reading)
    if isinstance(exc, ace.AzureError):
        return StorageConfigError(f"{where}: the Azure request failed ({type(exc).__name__})")
    return None
