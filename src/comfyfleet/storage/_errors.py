"""The errors a storage backend raises on purpose, sorted by what the caller should do next.

The job runner decides with one `isinstance`: a `StorageUnavailable` (the store is down, slow,
throttling, or answered 5xx) fails the attempt as retryable and keeps the outputs on local disk;
every other `StorageError` (bad settings, a missing bucket, refused credentials, a bad key) will
fail the same way next time, so retrying only wastes an attempt. Messages name the backend, the
bucket or container and the key, never a credential, a signature or a query string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from comfyfleet.errors import ComfyfleetError


class StorageError(ComfyfleetError):
    """Base of the errors the storage backends raise on purpose."""


class StorageUnavailable(StorageError):
    """The store could not be reached or is overloaded; the same call may work later."""


class StorageConfigError(StorageError):
    """The settings are wrong (bad URL, missing bucket, refused credentials, missing package):
    retrying will not help until someone changes them."""


class AccessDenied(StorageConfigError):
    """The store refused the credentials, or they do not allow this call (401/403)."""


class InvalidKey(StorageError):
    """An object key that could escape its folder or is not a plain relative POSIX path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"invalid storage key {key!r}: {reason}",
            hint="keys are relative POSIX paths such as 'job-1/image_00001_.png'",
        )
        self.key = key


class ObjectNotFound(StorageError):
    """The object (or input URL) does not exist."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where} does not exist", hint="check the bucket, container and key")
        self.where = where


class ObjectTooLarge(StorageError):
    """An input is larger than the caller accepts."""

    def __init__(self, where: str, limit: int) -> None:
        super().__init__(
            f"{where} is larger than the limit of {limit} bytes",
            hint="send a smaller file or raise the input size limit",
        )
        self.where = where
        self.limit = limit


def missing_package(package: str, extra: str) -> StorageConfigError:
    """The error for an optional dependency that is not installed."""
    return StorageConfigError(
        f"this storage backend needs the '{package}' package, which is not installed",
        hint=f"pip install 'comfyfleet[{extra}]'",
    )


@contextmanager
def translated(translate: Callable[[Exception], StorageError | None]) -> Iterator[None]:
    """Inside the block, an SDK exception that `translate` knows is raised as its StorageError
    (chained to it). StorageErrors, and exceptions `translate` does not know (bugs), pass as
    they are."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc
