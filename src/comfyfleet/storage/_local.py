"""Local disk storage, the default: outputs stay on the machine and the gateway serves them.

Each object is written to a hidden temporary file beside its final name and renamed into place,
so a reader (the gateway serving `/v1/outputs/...`) sees the old object or the whole new one,
never half a file. Blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from pathlib import Path

from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, StoredObject
from comfyfleet.storage._errors import (
    ObjectNotFound,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from comfyfleet.storage._keys import check_key, quote_key
from comfyfleet.storage._source import CHUNK, check_read_all, open_source

_NO_ACCESS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class LocalStorage:
    """Objects as files under `root`; `url` is `public_base_url` + the escaped key (with the
    default base '' the URL is the key itself, for the caller to mount where it serves files)."""

    def __init__(self, root: Path, public_base_url: str = "") -> None:
        self.root = Path(root)
        self.public_base_url = public_base_url

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r}, public_base_url={self.public_base_url!r})"

    def path_for(self, key: str) -> Path:
        """The file that holds `key` (it may not exist)."""
        return self.root / check_key(key)

    def url_for(self, key: str) -> str:
        return self.public_base_url + quote_key(check_key(key))

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        path = self.path_for(key)
        size, digest = await asyncio.to_thread(self._write, path, source)
        return StoredObject(key, self.url_for(key), content_type, size, digest)

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(f"local object '{key}'") from exc
        except OSError as exc:
            raise _os_error(exc, f"cannot read local object '{key}'") from exc

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except (NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _os_error(exc, f"cannot delete local object '{key}'") from exc

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"cannot create the output folder {self.root}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageConfigError(
                f"the output folder {self.root} is not writable",
                hint="fix its permissions or choose another folder",
            )

    def _write(self, path: Path, source: bytes | Path) -> tuple[int, str]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"cannot create the folder {path.parent}") from exc
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
        reader, expected = open_source(source)
        try:
            # 0o666 minus the umask, like any ordinary file (mkstemp would make it 0o600).
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "wb") as out:
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            check_read_all(reader, expected, f"local object {path}")
            os.replace(temp, path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise _os_error(exc, f"cannot write {path}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            reader.close()
        return reader.size, reader.sha256


def _os_error(exc: OSError, what: str) -> StorageError:
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_ACCESS:
        return StorageConfigError(f"{what}: {reason}", hint="check the folder's permissions")
    if exc.errno == errno.ENOSPC:
        return StorageUnavailable(f"{what}: {reason}", hint="free some disk space")
    return StorageError(f"{what}: {reason}")
