"""Server secrets kept in the workspace's state folder: made once, never replaced.

Signing keys (session cookies, idempotency ids) must survive a restart, or every session ends
and every retried request maps to a new job. The first process to need one writes it (mode 0600)
through a temp file linked into place, so two processes starting at once agree on one secret.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

SECRET_BYTES = 32

log = logging.getLogger("comfyfleet.auth")


def kept_secret(path: Path) -> bytes:
    """The secret in `path`, made there first if there is none."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
        try:
            os.link(tmp, path)  # never replaces one another process made meanwhile
            log.info("generated the secret %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())
