"""The fleet dashboard: server-rendered pages at `/dashboard/` on the `/v1` API.

Pages are Jinja2 templates filled from `/v1` answers (asked in-process, as the signed-in key),
kept live by htmx, with a little Alpine.js where a page holds state of its own; the few files
they load are shipped in the package (no Node.js, no CDN). Every action a page offers is a `/v1`
call made by the browser: the dashboard has no API of its own.
"""

from __future__ import annotations

from comfyfleet.dashboard._pages import dashboard_router
from comfyfleet.dashboard._settings import DashboardSettings

__all__ = ["DashboardSettings", "dashboard_router"]
