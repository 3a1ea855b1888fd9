"""`s3://` and `az://` model sources: the downloader's streamers, backed by `comfyfleet.storage`.

The object stores are read with the storage settings' endpoint and credentials (the account the
outputs go to, or any other those credentials can read), from the offset a resumed download
asks for. Storage errors become the downloader's: a missing object is :class:`SourceNotFound`,
refused credentials :class:`SourceAuthError`, an unreachable or busy store a retryable
:class:`DownloadError`, anything else in the settings a lasting one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from comfyfleet.models._errors import DownloadError, SourceAuthError, SourceNotFound
from comfyfleet.models._stream import Streamer

if TYPE_CHECKING:
    from comfyfleet.storage import StorageSettings


def object_streamers(settings: StorageSettings) -> dict[str, Streamer]:
    """Streamers for the `s3` and `az` schemes (the SDKs load on the first read)."""

    def stream(url: str, offset: int) -> Iterator[bytes]:
        from comfyfleet.storage import (
            AccessDenied,
            ObjectNotFound,
            StorageError,
            StorageUnavailable,
            stream_url,
        )

        try:
            yield from stream_url(url, settings, offset=offset)
        except ObjectNotFound as exc:
            raise SourceNotFound(exc.message, hint=exc.hint, url=url) from exc
        except AccessDenied as exc:
            raise SourceAuthError(exc.message, hint=exc.hint, url=url) from exc
        except StorageUnavailable as exc:
            raise DownloadError(exc.message, hint=exc.hint, retryable=True, url=url) from exc
        except StorageError as exc:
            raise DownloadError(exc.message, hint=exc.hint, url=url) from exc

    return {"s3": stream, "az": stream}
