"""The pages at `/dashboard/`: each one reads `/v1` as the viewer (see `_api`) and renders it.

A page's live part is the same URL with `?part=live`: htmx asks for it every `refresh_s` and
swaps it in, so the page stays current without a reload, and without JavaScript the page is
still the whole answer, as of its loading. Buttons and forms call `/v1` from the browser.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from comfyfleet.dashboard import _admin, _jobs, _models, _overview
from comfyfleet.dashboard._api import Answer, Api
from comfyfleet.dashboard._charts import latency_chart, throughput_chart
from comfyfleet.dashboard._forms import form_fields
from comfyfleet.dashboard._render import Pages, Viewer, is_loopback, viewer
from comfyfleet.dashboard._settings import DashboardSettings
from comfyfleet.dashboard._static import StaticFiles

_LOCAL_ONLY = (
    "API keys are off, so this dashboard answers browsers on the gateway's own machine only. "
    "Turn keys on (auth.enabled) to sign in from elsewhere, or set "
    "dashboard.allow_remote_without_keys if something in front of the gateway checks who "
    "comes in."
)


def dashboard_router(
    settings: DashboardSettings, *, keys_enabled: bool, sessions: bool
) -> APIRouter:
    """The pages. `keys_enabled`: the gateway asks for API keys (else pages answer loopback
    clients only, unless the settings allow others); `sessions`: browsers sign in at /login."""
    site = _Site(settings, keys_enabled=keys_enabled, sessions=sessions)
    router = APIRouter(include_in_schema=False)
    for path, handler in (
        ("/dashboard", site.root),
        ("/dashboard/static/{name}", site.static),
        ("/dashboard/", site.overview),
        ("/dashboard/jobs", site.jobs),
        ("/dashboard/jobs/{job_id}", site.job),
        ("/dashboard/run", site.run),
        ("/dashboard/models", site.models),
        ("/dashboard/instances", site.instances),
        ("/dashboard/instances/{ref}/log", site.instance_log),
        ("/dashboard/settings", site.settings_page),
    ):
        router.add_api_route(path, handler, methods=["GET"])
    return router


class _Site:
    """The page handlers, around what they share."""

    def __init__(self, settings: DashboardSettings, *, keys_enabled: bool, sessions: bool) -> None:
        self.settings = settings
        self.keys_enabled = keys_enabled
        self.sessions = sessions
        self.statics = StaticFiles()
        self.pages = Pages(self.statics, refresh_s=settings.refresh_s)

    def open_to(self, request: Request) -> Viewer | None:
        """Who is looking, or None when this browser may not (keys off, not on loopback)."""
        allowed = self.keys_enabled or self.settings.allow_remote_without_keys
        if allowed or is_loopback(request):
            return viewer(request, sessions=self.sessions)
        return None

    def refused(self, request: Request) -> HTMLResponse:
        context = {"title": "Not from here", "message": _LOCAL_ONLY}
        who = Viewer(None, self.sessions)
        return self.pages.render(request, "message.html", context, who=who, status=403)

    async def root(self) -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=308)

    async def static(self, name: str, request: Request) -> Response:
        return self.statics.answer(name, request)

    async def overview(self, request: Request, part: str = "") -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            fleet, running, stats, failed, pending = await asyncio.gather(
                v1.get("/v1/instances"),
                v1.get("/v1/jobs", status="running", limit=100),
                v1.get("/v1/stats"),
                _deliveries(v1, who, "failed"),
                _deliveries(v1, who, "pending"),
            )
        now = time.time()
        data = fleet.data if fleet.ok else None
        context = {
            "title": "Overview",
            "cards": _overview.instance_cards(data or {}, running.get("jobs", []), now),
            "machines": _overview.machines(data or {}, now),
            "warnings": _overview.warnings(
                data,
                now=now,
                fleet_error=None if fleet.ok else fleet.error,
                failed_deliveries=len(failed.get("deliveries", [])) if failed else None,
                retrying=pending.get("deliveries", []) if pending else None,
            ),
            "queue": stats.get("queue", {}),
            "stats": stats.data if stats.ok else {},
            "throughput": throughput_chart(stats.data if stats.ok else {}),
            "latency": latency_chart(stats.data if stats.ok else {}),
        }
        template = "overview_live.html" if part == "live" else "overview.html"
        return self.pages.render(request, template, context, who=who, page="overview")

    async def jobs(
        self,
        request: Request,
        part: str = "",
        status: str = "",
        template: str = "",
        cursor: str = "",
    ) -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        status = status if status in _jobs.STATUSES else ""
        async with Api(request.app, who.key) as v1:
            listed = await v1.get("/v1/jobs", status=status, limit=50, cursor=cursor)
        rows = _jobs.job_rows(listed.get("jobs", []), time.time())
        if template:
            rows = [r for r in rows if template.lower() in r.label.lower()]
        context = {
            "title": "Jobs",
            "rows": rows,
            "error": None if listed.ok else listed.error,
            "status": status,
            "template": template,
            "cursor": cursor,
            "next_cursor": listed.get("next_cursor"),
            "statuses": _jobs.STATUSES,
        }
        name = "jobs_live.html" if part == "live" else "jobs.html"
        return self.pages.render(request, name, context, who=who, page="jobs")

    async def job(self, request: Request, job_id: str, part: str = "") -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            found, workflow = await asyncio.gather(
                v1.get(f"/v1/jobs/{_part(job_id)}"), v1.get(f"/v1/jobs/{_part(job_id)}/workflow")
            )
        if not found.ok:
            missing = {"title": "No such job", "message": found.error}
            return self.pages.render(request, "message.html", missing, who=who, status=found.status)
        detail = _jobs.job_detail(found.data, workflow.data if workflow.ok else None)
        context = {"title": f"Job {job_id}", "job": detail}
        name = "job_live.html" if part == "live" else "job.html"
        return self.pages.render(request, name, context, who=who, page="jobs")

    async def run(self, request: Request, template: str = "") -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            listed = await v1.get("/v1/templates")
            known = [t for t in listed.get("templates", []) if isinstance(t, dict)]
            names = [str(t["name"]) for t in known]
            chosen = template or ("txt2img" if "txt2img" in names else (names or [""])[0])
            detail = await v1.get(f"/v1/templates/{_part(chosen)}") if chosen else None
        context: dict[str, Any] = {
            "title": "Run",
            "templates": known,
            "broken": listed.get("broken", []),
            "error": None if listed.ok else listed.error,
            "chosen": chosen,
            "template": detail.data if detail is not None and detail.ok else None,
            "template_error": detail.error if detail is not None and not detail.ok else None,
            "fields": form_fields(detail.get("parameters", {})) if detail is not None else [],
        }
        return self.pages.render(request, "run.html", context, who=who, page="run")

    async def models(self, request: Request) -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            files, presets, fleet = await asyncio.gather(
                v1.get("/v1/models"), v1.get("/v1/presets"), v1.get("/v1/instances")
            )
        local = files.status != 404  # a gateway without an agent has no disk of models
        groups = _models.model_groups(files.get("models", []))
        context = {
            "title": "Models",
            "local": local,
            "groups": groups if local else _models.registry_models(fleet.data or {}),
            "presets": _models.preset_rows(presets.get("presets", [])),
            "disks": _models.model_disks(fleet.data if fleet.ok else {}),
            "types": sorted({g.folder_type for g in groups} | set(_models.COMMON_TYPES)),
            "error": None if files.ok or not local else files.error,
        }
        return self.pages.render(request, "models.html", context, who=who, page="models")

    async def instances(self, request: Request, part: str = "") -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            fleet, running = await asyncio.gather(
                v1.get("/v1/instances"), v1.get("/v1/jobs", status="running", limit=100)
            )
        now = time.time()
        context = {
            "title": "Instances",
            "cards": _overview.instance_cards(fleet.data or {}, running.get("jobs", []), now),
            "error": None if fleet.ok else fleet.error,
        }
        name = "instances_live.html" if part == "live" else "instances.html"
        return self.pages.render(request, name, context, who=who, page="instances")

    async def instance_log(self, request: Request, ref: str) -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            log = await v1.get(f"/v1/instances/{_part(ref)}/logs", lines=200)
        context = {
            "ref": ref,
            "lines": log.get("lines", []),
            "updated_at": log.get("updated_at"),
            "error": None if log.ok else log.error,
        }
        return self.pages.render(request, "instance_log.html", context, who=who)

    async def settings_page(self, request: Request) -> Response:
        who = self.open_to(request)
        if who is None:
            return self.refused(request)
        async with Api(request.app, who.key) as v1:
            keys, config, pending, failed = await asyncio.gather(
                v1.get("/v1/keys"),
                v1.get("/v1/config"),
                v1.get("/v1/webhooks/deliveries", state="pending", limit=50),
                v1.get("/v1/webhooks/deliveries", state="failed", limit=50),
            )
        now = time.time()
        context = {
            "title": "Settings",
            "keys": _admin.key_rows(keys.get("keys", []), now),
            "keys_enabled": keys.get("enabled"),
            "static_key": keys.get("static_key"),
            "keys_error": None if keys.ok else keys.error,
            "config": _admin.settings_text(config.get("settings", {})) if config.ok else "",
            "config_error": None if config.ok else config.error,
            "role": config.get("role", ""),
            "version": config.get("version", ""),
            "pending": _admin.delivery_rows(pending.get("deliveries", []), now),
            "failed": _admin.delivery_rows(failed.get("deliveries", []), now),
            "deliveries_error": None if failed.ok else failed.error,
        }
        return self.pages.render(request, "settings.html", context, who=who, page="settings")


def _part(value: str) -> str:
    """A value from this page's URL, as one segment of a `/v1` path."""
    return quote(value, safe="")


async def _deliveries(v1: Api, who: Viewer, state: str) -> Answer | None:
    """Webhook deliveries in `state`, for the overview's warnings (admins only may read them;
    for others the warnings are left out rather than refused)."""
    if not who.admin:
        return None
    return await v1.get("/v1/webhooks/deliveries", state=state, limit=50)
