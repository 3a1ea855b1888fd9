"""The dashboard's static files (script, styles, vendored libraries), served from package data.

Each file is read once, compressed once (gzip), and named in pages with its content hash
(`/dashboard/static/htmx.min.js?v=3f9c...`), so a browser keeps it for a year and fetches it
again only when it changed. A first visit costs the compressed bytes: the page-weight budget
(the overview under 150 KB) counts on that.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import Request
from fastapi.responses import Response

from comfyfleet.gateway import ApiError

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    media_type: str
    version: str


class StaticFiles:
    """Every file of the package's `static/` folder, in memory."""

    def __init__(self, package: str = "comfyfleet.dashboard") -> None:
        self.files: dict[str, StaticFile] = {}
        folder = resources.files(package).joinpath("static")
        for entry in folder.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if not entry.is_file() or suffix not in _TYPES:
                continue
            body = entry.read_bytes()
            media = _TYPES[suffix]
            self.files[entry.name] = StaticFile(
                body,
                gzip.compress(body, compresslevel=9, mtime=0),
                media,
                hashlib.sha256(body).hexdigest()[:12],
            )

    def url(self, name: str) -> str:
        return f"/dashboard/static/{name}?v={self.files[name].version}"

    def answer(self, name: str, request: Request) -> Response:
        found = self.files.get(name)
        if found is None:
            raise ApiError(404, "not_found", f"no static file '{name}'")
        etag = f'"{found.version}"'
        lasting = request.query_params.get("v") == found.version
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=31536000, immutable" if lasting else "no-cache",
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            return Response(found.gzipped, media_type=found.media_type, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)
