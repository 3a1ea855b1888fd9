"""Storage: where job inputs and outputs live (local disk, S3, Azure Blob, HTTP PUT).

Every backend implements the small `Storage` protocol and is an object the caller builds once
with `open_storage` and passes down; `MemoryStorage` stands in for them in unit tests. Errors
say whether a retry can help: `StorageUnavailable` (yes) or any other `StorageError` (no).
"""

from __future__ import annotations

from comfyfleet.storage._azure import CONNECTION_STRING_ENV
from comfyfleet.storage._azure_storage import AzureBlobStorage
from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, Storage, StoredObject
from comfyfleet.storage._errors import (
    AccessDenied,
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from comfyfleet.storage._http import HttpPutStorage
from comfyfleet.storage._images import ImageFormat, convert_image
from comfyfleet.storage._keys import check_key
from comfyfleet.storage._local import LocalStorage
from comfyfleet.storage._memory import MemoryStorage
from comfyfleet.storage._open import open_storage
from comfyfleet.storage._read import READABLE, ObjectInfo, object_info, read_url, stream_url
from comfyfleet.storage._s3_storage import S3Storage
from comfyfleet.storage._settings import StorageSettings, Target, parse_storage_url

__all__ = [
    "CONNECTION_STRING_ENV",
    "DEFAULT_CONTENT_TYPE",
    "READABLE",
    "AccessDenied",
    "AzureBlobStorage",
    "HttpPutStorage",
    "ImageFormat",
    "InvalidKey",
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectTooLarge",
    "S3Storage",
    "Storage",
    "StorageConfigError",
    "StorageError",
    "StorageSettings",
    "StorageUnavailable",
    "StoredObject",
    "Target",
    "check_key",
    "convert_image",
    "object_info",
    "open_storage",
    "parse_storage_url",
    "read_url",
    "stream_url",
]
