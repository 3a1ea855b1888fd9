"""Signed, short-lived links to output files: what a `url` answer hands out for outputs that
sit on the gateway's disk.

OpenAI answers `url` with a link that works for a while without the API key, and clients rely
on that: a chat front end may fetch it with the key or without (Open WebUI sends the key only
to the origin it was configured with), a browser showing the picture never sends one. A link
here carries its own credential instead: an expiry and an HMAC over the job's output path and
that expiry, so it opens that one file until then and nothing else. Outputs in S3 or Azure get
the store's own signed URLs instead (they expire by the store's settings).

The key is derived from the gateway's session secret (configured `auth.session_secret`, else
the one kept in the workspace), so every gateway that shares that secret accepts the links of
the others, and a link cannot be turned into a session cookie or the reverse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote

OUTPUTS_PATH = "/images/outputs/"
"""Where, under the prefix, the links point: `.../images/outputs/{job}/{path}?expires&signature`."""
_LABEL = b"comfyfleet openai image links v1"


class ImageLinks:
    """Makes and checks the links; `ttl_s` is how long a new link stays valid."""

    def __init__(self, secret: bytes, *, prefix: str, ttl_s: float) -> None:
        self._key = hmac.new(secret, _LABEL, hashlib.sha256).digest()
        self.prefix = prefix
        self.ttl_s = ttl_s

    def url(self, base: str, job_id: str, path: str, *, now: float | None = None) -> str:
        """The absolute link to output `path` of job `job_id`, `base` being the origin the
        client reached (scheme, host, any mount path)."""
        expires = int((time.time() if now is None else now) + self.ttl_s)
        signature = self._sign(job_id, path, expires)
        where = f"{quote(job_id, safe='')}/{quote(path)}"
        return f"{base}{self.prefix}{OUTPUTS_PATH}{where}?expires={expires}&signature={signature}"

    def valid(
        self, job_id: str, path: str, expires: str, signature: str, *, now: float | None = None
    ) -> bool:
        """Whether a link's query is one this gateway made for that file and has not expired."""
        if not expires.isdigit() or len(expires) > 12:
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        wanted = self._sign(job_id, path, int(expires))
        return hmac.compare_digest(wanted.encode(), signature.encode("utf-8", "replace"))

    def _sign(self, job_id: str, path: str, expires: int) -> str:
        message = f"{job_id}\n{path}\n{expires}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
