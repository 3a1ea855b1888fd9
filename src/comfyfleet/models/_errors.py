"""The errors of the models package: each says what was wrong, where, and what to do.

A download error tells whether trying again could help (`retryable`), so that the dispatcher can
fail a job for good (a 404, a checksum mismatch) or put it back in the queue (a network outage).
"""

from __future__ import annotations

from typing import Any

from comfyfleet.errors import ComfyfleetError


class ModelError(ComfyfleetError):
    """Base of every error of the models package."""


class ManifestError(ModelError):
    """A preset or manifest file is unreadable or names something invalid."""


class PresetNotFound(ModelError):
    """No loaded manifest has a preset of that name."""


class ModelNotFound(ModelError):
    """No model file of that type and name is on disk."""


class DownloadError(ModelError):
    """A file could not be fetched."""

    def __init__(
        self, message: str, *, hint: str | None = None, retryable: bool = False, url: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable
        self.url = url


class SourceAuthError(DownloadError):
    """The server wants a token (401) or refused the one given (403)."""


class SourceNotFound(DownloadError):
    """The server has no such file (404/410)."""


class ChecksumMismatch(DownloadError):
    """The bytes fetched do not hash to the sha256 (or git blob id) the manifest promised."""

    def __init__(
        self, name: str, expected: str, actual: str, url: str = "", *, algorithm: str = "sha256"
    ) -> None:
        super().__init__(
            f"{name}: {algorithm} mismatch: expected {expected}, got {actual}; the partial file"
            " was deleted",
            hint="the source serves other bytes than the manifest describes: check the URL and"
            " revision, or fix the manifest (`comfyfleet models hash`)",
            url=url,
        )
        self.expected = expected
        self.actual = actual


class SizeMismatch(DownloadError):
    """The server's file has another size than the manifest promised."""


class InsufficientSpace(DownloadError):
    """The target disk has not enough free space for the download (checked before it starts)."""


class ModelMissing(ModelError):
    """A workflow names a model file that is not on disk and that no manifest knows."""

    def __init__(
        self, node_id: str, class_type: str, input_name: str, folder_type: str, filename: str
    ) -> None:
        super().__init__(
            f"node {node_id} ({class_type}): input '{input_name}' names {folder_type} file"
            f" '{filename}', which is not in the models folders and no manifest knows it",
            hint=f"put the file into the models root's {folder_type} folder, add it to a"
            " manifest (models.manifests), or give a URL instead of the file name",
        )
        self.node_id = node_id
        self.class_type = class_type
        self.input_name = input_name
        self.folder_type = folder_type
        self.filename = filename

    def details(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "class_type": self.class_type,
            "input": self.input_name,
            "folder_type": self.folder_type,
            "filename": self.filename,
        }
