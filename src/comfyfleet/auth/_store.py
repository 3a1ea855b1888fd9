"""The key file: API keys kept as digests in one JSON file that the CLI and running servers share.

The file lives in the workspace's state folder (`state/api_keys.json`) unless the settings name
another. A change (create, revoke) is a read-modify-write under an exclusive `flock` on a lock file
next to it, written to a temporary file of mode 0600 that is renamed over the old one: readers see
the old file or the new one, never half of one, and two CLI commands at once lose nothing.

A running gateway checks the file's identity (device, inode, size, mtime) before each verification
(one `stat`, no read) and re-reads it when it changed, so a key created or revoked with the CLI
counts from the next request on, without a restart. A file that cannot be read fails closed: the
error reaches the caller, and no request is let in on stale keys.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from comfyfleet.auth._errors import AuthError, KeyNotFound, KeyStoreError
from comfyfleet.auth._keys import (
    ADMIN,
    DEFAULT_SCOPES,
    KeyRecord,
    digest_of,
    hint_of,
    key_id_of,
    new_key,
    new_key_id,
)
from comfyfleet.auth._settings import AuthSettings

KEYS_FILE_NAME = "api_keys.json"
STATIC_KEY_ID = "static"
"""The id of the key given in the settings (`auth.api_key`); stored ids have 8 characters.
It has the `admin` scope: it is the operator's key, set where the server itself is configured."""

_FILE_VERSION = 1
_MAX_NAME = 64
_DUMMY_DIGEST = digest_of("cf_00000000_" + "A" * 43)
"""Compared against when the presented id is unknown, so that it costs what a known one costs."""

_Signature = tuple[int, int, int, int]


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: the only time its text exists outside the client that keeps it."""

    record: KeyRecord
    token: str = field(repr=False)


class KeyStore:
    """API keys in a JSON file, plus an optional static key held in memory only.

    `clock` gives the time used for creation, expiry and revocation (tests pass their own).
    """

    def __init__(
        self,
        path: Path,
        *,
        static_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._clock = clock
        self._static: KeyRecord | None = None
        if static_key is not None:
            self._static = KeyRecord(
                id=STATIC_KEY_ID,
                name="static key from the settings",
                digest=digest_of(static_key),
                created_at=clock(),
                hint=hint_of(static_key),
                scopes=frozenset({ADMIN}),
            )
        self._records: dict[str, KeyRecord] = {}
        self._signature: _Signature | None = None
        self._loaded = False
        self._lock = threading.Lock()

    # --- checking keys ------------------------------------------------------------------------

    def verify(self, token: str) -> KeyRecord | None:
        """The record of a valid key; None for an unknown, malformed, revoked or expired one.

        Whatever the token, the stored path does exactly one constant-time comparison (against a
        dummy digest when the id is unknown or the token malformed), so answers do not tell apart
        "no such id" from "wrong secret". Raises :class:`KeyStoreError` when the file is unreadable.
        """
        presented = digest_of(token)
        records = self._current()
        key_id = key_id_of(token)
        stored = records.get(key_id) if key_id is not None else None
        same = hmac.compare_digest(presented, _DUMMY_DIGEST if stored is None else stored.digest)
        found = stored if same else None
        if self._static is not None and hmac.compare_digest(presented, self._static.digest):
            found = self._static
        if found is None or found.revoked or found.expired(self._clock()):
            return None
        return found

    def records(self) -> list[KeyRecord]:
        """Every key of the file, oldest first (revoked and expired ones included)."""
        return sorted(self._current().values(), key=lambda r: (r.created_at, r.id))

    def get(self, key_id: str) -> KeyRecord:
        try:
            return self._current()[key_id]
        except KeyError:
            raise _not_found(key_id, self.path) from None

    @property
    def has_static_key(self) -> bool:
        return self._static is not None

    # --- changing keys ------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        expires_in_s: float | None = None,
        scopes: frozenset[str] = DEFAULT_SCOPES,
        max_running: int | None = None,
    ) -> IssuedKey:
        """Make a new key named `name`, valid for `expires_in_s` seconds (None: until revoked),
        allowed what `scopes` cover, running at most `max_running` jobs at once (None: the
        server's `serve.max_running_per_key`)."""
        name = _checked_name(name)
        if max_running is not None and max_running < 1:
            raise AuthError(
                f"a key's running limit must be at least 1, not {max_running}",
                hint="leave out --max-running for the server's default",
            )
        if not scopes:
            raise AuthError("a key needs at least one scope", hint="submit, read or admin")
        if expires_in_s is not None and not expires_in_s > 0:
            raise AuthError(
                f"a key's lifetime must be positive, not {expires_in_s}",
                hint="leave out --expires-in for a key that lasts until revoked",
            )
        with self._exclusive():
            records = _read(self.path)
            key_id = new_key_id()
            while key_id in records:
                key_id = new_key_id()
            token = new_key(key_id)
            now = self._clock()
            record = KeyRecord(
                id=key_id,
                name=name,
                digest=digest_of(token),
                created_at=now,
                hint=hint_of(token),
                expires_at=None if expires_in_s is None else now + expires_in_s,
                scopes=scopes,
                max_running=max_running,
            )
            records[key_id] = record
            self._write(records)
        return IssuedKey(record=record, token=token)

    def revoke(self, key_id: str) -> KeyRecord:
        """Refuse the key from now on; revoking a revoked key changes nothing."""
        with self._exclusive():
            records = _read(self.path)
            record = records.get(key_id)
            if record is None:
                raise _not_found(key_id, self.path)
            if not record.revoked:
                record = replace(record, revoked_at=self._clock())
                records[key_id] = record
                self._write(records)
        return record

    # --- the file -----------------------------------------------------------------------------

    def _current(self) -> dict[str, KeyRecord]:
        with self._lock:
            signature = _signature_of(self.path)
            if not self._loaded or signature != self._signature:
                self._records = _read(self.path) if signature is not None else {}
                self._signature = signature
                self._loaded = True
            return self._records

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyStoreError(
                f"cannot lock the key file {self.path}: {exc.strerror or exc}",
                hint="check that its folder exists and is writable",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, records: dict[str, KeyRecord]) -> None:
        data = {
            "version": _FILE_VERSION,
            "keys": [r.to_json() for r in sorted(records.values(), key=lambda r: r.created_at)],
        }
        try:
            _write_private(self.path, json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise KeyStoreError(
                f"cannot write the key file {self.path}: {exc.strerror or exc}",
                hint="check that its folder is writable",
            ) from exc
        with self._lock:
            self._records = records
            self._signature = _signature_of(self.path)
            self._loaded = True


def keys_file_path(settings: AuthSettings, state_dir: Path) -> Path:
    """`auth.keys_file` when set, else `STATE_DIR/api_keys.json`."""
    return settings.keys_file or state_dir / KEYS_FILE_NAME


def open_key_store(
    settings: AuthSettings, state_dir: Path, *, clock: Callable[[], float] = time.time
) -> KeyStore:
    """The key store the settings describe (`state_dir` is the workspace's `state/` folder)."""
    static = settings.api_key.get_secret_value().strip() if settings.api_key else None
    return KeyStore(keys_file_path(settings, state_dir), static_key=static, clock=clock)


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise AuthError(
            f"a key name must be 1 to {_MAX_NAME} printable characters, not {name!r}",
            hint="name keys after who uses them, e.g. --name ci-pipeline",
        )
    return name


def _not_found(key_id: str, path: Path) -> KeyNotFound:
    return KeyNotFound(
        f"no API key with id '{key_id}' in {path}", hint="`comfyfleet keys list` shows the ids"
    )


def _signature_of(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyStoreError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: Path) -> dict[str, KeyRecord]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KeyStoreError(
            f"cannot read the key file {path}: {exc.strerror or exc}",
            hint="the server and the `keys` commands must run as a user that can read it",
        ) from exc
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise KeyStoreError(
            f"the key file {path} is not JSON: {exc}",
            hint="fix it by hand, or move it away and create the keys again",
        ) from exc
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise KeyStoreError(f"the key file {path} has no 'keys' list")
    records: dict[str, KeyRecord] = {}
    for index, entry in enumerate(entries):
        record = KeyRecord.from_json(entry, f"entry {index} of {path}")
        records[record.id] = record
    return records


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a new file of mode 0600 and rename it over `path` (atomic on POSIX)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_name)
        raise
    with suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
