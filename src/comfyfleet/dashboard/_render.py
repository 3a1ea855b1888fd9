"""Rendering a dashboard page: the Jinja2 environment, who is looking, and the answer's headers.

Every page answer forbids what the pages do not need: scripts and styles from anywhere but this
site (no inline script runs, so text a job or a log carries cannot become code), framing by
other sites, caching (pages show live state and whose key is signed in). Pages over a couple of
kilobytes are gzipped when the browser takes it.
"""

from __future__ import annotations

import gzip
import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from comfyfleet import __version__
from comfyfleet.auth import ADMIN, KeyRecord, key_of
from comfyfleet.dashboard import _format
from comfyfleet.dashboard._static import StaticFiles

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: https:; media-src 'self' blob: https:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_GZIP_FROM = 1400
NAV = (
    ("overview", "/dashboard/", "Overview"),
    ("jobs", "/dashboard/jobs", "Jobs"),
    ("run", "/dashboard/run", "Run"),
    ("models", "/dashboard/models", "Models"),
    ("instances", "/dashboard/instances", "Instances"),
    ("settings", "/dashboard/settings", "Settings"),
)


def environment(statics: StaticFiles) -> Environment:
    env = Environment(
        loader=PackageLoader("comfyfleet.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(static=statics.url, nav=NAV, version=__version__)
    env.filters.update(
        size=_format.size,
        duration=_format.duration,
        ago=_format.ago,
        timestamp=_format.timestamp,
        iso=_format.iso,
    )
    return env


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the signed-in key (None with keys off, when everyone may do anything)."""

    key: KeyRecord | None
    sessions: bool
    """Browsers sign in at /login here (a sign-out button makes sense)."""

    @property
    def admin(self) -> bool:
        return self.key is None or self.key.allows(ADMIN)

    @property
    def label(self) -> str:
        if self.key is None:
            return "API keys are off"
        return f"{self.key.name} ({self.key.id})"


def viewer(request: Request, *, sessions: bool) -> Viewer:
    return Viewer(key_of(request.scope), sessions)


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Pages:
    """Renders templates into answers with the dashboard's headers."""

    def __init__(self, statics: StaticFiles, *, refresh_s: float) -> None:
        self.env = environment(statics)
        self.refresh_s = refresh_s

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        who: Viewer,
        page: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        values = {
            "page": page,
            "viewer": who,
            "refresh_ms": int(self.refresh_s * 1000),
            "now": time.time(),
            "request_path": request.url.path,
            **context,
        }
        body = self.env.get_template(template).render(values).encode()
        headers = dict(HEADERS)
        if len(body) >= _GZIP_FROM and "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        return HTMLResponse(body, status_code=status, headers=headers)
