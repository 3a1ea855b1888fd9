"""Build the output storage the settings name."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.storage._azure_storage import AzureBlobStorage
from comfyfleet.storage._base import Storage
from comfyfleet.storage._http import HttpPutStorage
from comfyfleet.storage._local import LocalStorage
from comfyfleet.storage._s3_storage import S3Storage
from comfyfleet.storage._settings import StorageSettings


def open_storage(
    settings: StorageSettings, *, local_root: Path, local_base_url: str = ""
) -> Storage:
    """The backend for `settings.url`. `local_root` is the folder for `file://` (the workspace's
    output folder), `local_base_url` what local URLs start with (e.g. '/v1/outputs/').

    Nothing is contacted here: call `check()` to find out whether the store answers. Raises
    StorageConfigError for settings no backend can use (such as a missing optional package)."""
    target = settings.target
    if target.kind == "local":
        root = Path(target.location) if target.location else local_root
        base = settings.public_base_url if settings.public_base_url is not None else local_base_url
        return LocalStorage(root, base)
    if target.kind == "s3":
        return S3Storage(target.container, target.prefix, settings=settings)
    if target.kind == "azure":
        return AzureBlobStorage(target.container, target.prefix, settings=settings)
    headers = {name: value.get_secret_value() for name, value in settings.http_headers.items()}
    return HttpPutStorage(
        target.location,
        headers,
        public_base_url=settings.public_base_url,
        attempts=settings.attempts,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
    )
