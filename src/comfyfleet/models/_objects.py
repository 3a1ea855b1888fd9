"""`s3://` and `az://` model sources: the downloader's readers, backed by `comfyfleet.storage`.

The object stores are read with the storage settings' endpoint and credentials (the account the
outputs go to, or any other those credentials can read), from the offset a resumed download
asks for; the object's ETag is its version, so partial bytes of a replaced object are dropped,
and its size is checked against the free disk first.
Storage errors become the downloader's: a missing object is :class:`SourceNotFound`, refused
credentials :class:`SourceAuthError`, an unreachable or busy store a retryable
:class:`DownloadError`, anything else in the settings a lasting one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from comfyfleet.models._errors import DownloadError, SourceAuthError, SourceNotFound
from comfyfleet.models._stream import ObjectReader, SourceStat

if TYPE_CHECKING:
    from comfyfleet.storage import StorageSettings


def object_readers(settings: StorageSettings) -> dict[str, ObjectReader]:
    """Readers for the `s3` and `az` schemes (the SDKs load on the first read)."""

    def stream(url: str, offset: int) -> Iterator[bytes]:
        from comfyfleet.storage import stream_url

        with _as_download_errors(url):
            yield from stream_url(url, settings, offset=offset)

    def stat(url: str) -> SourceStat:
        from comfyfleet.storage import object_info

        with _as_download_errors(url):
            info = object_info(url, settings)
        return SourceStat(info.etag, info.size)

    reader = ObjectReader(stream, stat)
    return {"s3": reader, "az": reader}


@contextmanager
def _as_download_errors(url: str) -> Iterator[None]:
    from comfyfleet.storage import AccessDenied, ObjectNotFound, StorageError, StorageUnavailable

    try:
        yield
    except ObjectNotFound as exc:
        raise SourceNotFound(exc.message, hint=exc.hint, url=url) from exc
    except AccessDenied as exc:
        raise SourceAuthError(exc.message, hint=exc.hint, url=url) from exc
    except StorageUnavailable as exc:
        raise DownloadError(exc.message, hint=exc.hint, retryable=True, url=url) from exc
    except StorageError as exc:
        raise DownloadError(exc.message, hint=exc.hint, url=url) from exc
