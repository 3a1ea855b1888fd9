"""What a manifest promises about a file, and the checks that hold a download to it.

Most hubs publish a file's size and sha256 (Hugging Face's LFS objects do). A file kept in plain
git, as the TAESD decoders are on GitHub, has only its git blob id published: the sha1 of
`blob <size>\\0` followed by its bytes, which the commit's tree lists. A manifest may give that
instead (`git_blob`); it is checked by one more read of the finished file before the rename, which
costs nothing next to the download for the small files that are kept in plain git.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

_READ = 4 * 1024 * 1024


@dataclass(frozen=True)
class Expected:
    """A file's promised size, sha256 and git blob id; a check is skipped where none is given."""

    size: int | None = None
    sha256: str | None = None
    git_blob: str | None = None


def git_blob_id(fd: int, size: int) -> str:
    """The git blob id of the first `size` bytes of the open file `fd`."""
    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    position = 0
    while position < size:
        data = os.pread(fd, min(_READ, size - position), position)
        if not data:
            raise OSError(f"the file ends at byte {position} of {size}")
        digest.update(data)
        position += len(data)
    return digest.hexdigest()


def git_blob_of(path: os.PathLike[str] | str) -> str:
    """The git blob id of a whole file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return git_blob_id(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
