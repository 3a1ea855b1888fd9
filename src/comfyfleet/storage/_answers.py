"""How an object store's error answer (an error code and an HTTP status) becomes a storage error.

S3 and Azure Blob answer alike: throttling and 5xx can be retried; a missing bucket or container
is a settings problem (or, for an input URL someone gave, that URL's problem); 401/403 are
refused credentials. Only their words and error codes differ, so each store names them in a
`StoreDialect` and the sorting is written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyfleet.storage._errors import (
    AccessDenied,
    ObjectNotFound,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)


@dataclass(frozen=True)
class StoreDialect:
    """What one kind of object store calls things, and what its error codes mean."""

    name: str
    """How messages name the store: 'S3', 'Azure'."""
    scheme: str
    """The URL scheme of its objects: 's3', 'az'."""
    container: str
    """What it calls a container: 'bucket', 'container'."""
    container_missing: str
    """The error code for a bucket or container that does not exist."""
    busy_codes: frozenset[str]
    """Codes that mean 'retry later' even below HTTP 500."""
    missing_codes: frozenset[str]
    """Codes that mean 'no such object' even without HTTP 404."""
    denied_codes: frozenset[str]
    """Codes that mean 'refused credentials' even without HTTP 401/403."""
    credentials_hint: str

    def where(self, container: str, name: str = "") -> str:
        """`s3://bucket/key` for an object, `S3 bucket 'bucket'` for the container itself."""
        if name:
            return f"{self.scheme}://{container}/{name}"
        return f"{self.name} {self.container} '{container}'"

    def missing_container(self, container: str) -> StorageConfigError:
        return StorageConfigError(
            f"{self.where(container)} does not exist",
            hint=f"create it, or fix the {self.container} in the storage URL",
        )

    def answer_error(
        self, code: str, status: int, container: str, name: str = "", *, reading: bool = False
    ) -> StorageError:
        """The error for the store answering `code` with HTTP `status` (0 when unknown) about
        `name` in `container`. When `reading` a URL someone gave, a missing container is
        that URL's problem (ObjectNotFound), not the settings'."""
        where = self.where(container, name)
        said = f"{code or 'error'} (HTTP {status})" if status else code or "error"
        if code in self.busy_codes or status >= 500 or status == 429:
            return StorageUnavailable(
                f"{where}: the {self.name} store answered {said}",
                hint="the store is busy; retry later",
            )
        if code == self.container_missing and not reading:
            return self.missing_container(container)
        if code in self.missing_codes or status == 404:
            return ObjectNotFound(where)
        if code in self.denied_codes or status in (401, 403):
            return AccessDenied(
                f"{where}: the {self.name} store refused the credentials: {said}",
                hint=self.credentials_hint,
            )
        return StorageConfigError(f"{where}: the {self.name} store refused the request: {said}")
