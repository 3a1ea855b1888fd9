"""The dashboard's pages through the whole app (auth middleware included) over an in-memory store:
who may see them, what they show of `/v1`, what they never show, and how they are served."""

from __future__ import annotations

import asyncio
import gzip
import html
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from comfyfleet.auth import AuthSettings, KeyStore
from comfyfleet.config import Settings, redacted_settings
from comfyfleet.dashboard import DashboardSettings, dashboard_router
from comfyfleet.gateway import (
    ServeSettings,
    Service,
    config_router,
    create_app,
    keys_router,
    templates_router,
)
from comfyfleet.jobs import MemoryJobStore, MemoryRegistry, NewJob
from comfyfleet.templates import TemplateLibrary
from tests.registry_contract import agent, instance

ADMIN = "a" * 40
GRAPH = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}


def _app(tmp_path: Path, *, keys: KeyStore | None = None, **dashboard: Any) -> tuple[Any, Service]:
    service = Service(
        store=MemoryJobStore(),
        output_dir=tmp_path / "out",
        settings=ServeSettings(),
        registry=MemoryRegistry(),
    )
    settings = Settings(
        serve={"store": "postgresql://fleet:hunter2@db/fleet"},  # type: ignore[arg-type]
        auth=AuthSettings(enabled=keys is not None, api_key=SecretStr(ADMIN)),
    )
    store = keys or KeyStore(tmp_path / "keys.json")
    routers = (
        keys_router(store, enabled=keys is not None),
        config_router(lambda: redacted_settings(settings), role="serve"),
        templates_router(service, TemplateLibrary.for_workspace(tmp_path, ())),
        dashboard_router(
            DashboardSettings(**dashboard), keys_enabled=keys is not None, sessions=False
        ),
    )
    return create_app(service, routers=routers, keys=keys), service


def _get(
    app: Any,
    url: str,
    *,
    client: str = "127.0.0.1",
    setup: Any = None,
    **headers: str,
) -> httpx.Response:
    async def main() -> httpx.Response:
        if setup is not None:
            await setup()
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await http.get(url, headers=headers)

    return asyncio.run(main())


def test_with_keys_off_pages_answer_this_machine_only_unless_allowed(tmp_path: Path) -> None:
    app, service = _app(tmp_path)

    async def fleet() -> None:
        await service.registry.report(agent("a"), [instance(0, "a"), instance(1, "a")])

    local = _get(app, "/dashboard/", setup=fleet)
    assert local.status_code == 200
    assert local.headers["content-security-policy"].startswith("default-src 'self'")
    assert local.headers["cache-control"] == "no-store"
    assert 'data-instance="0"' in local.text and 'data-instance="1"' in local.text
    remote = _get(app, "/dashboard/", client="10.1.2.3")
    assert remote.status_code == 403
    assert "answers browsers on the gateway's own machine only" in html.unescape(remote.text)
    allowed, _ = _app(tmp_path, allow_remote_without_keys=True)
    assert _get(allowed, "/dashboard/", client="10.1.2.3").status_code == 200


def test_with_keys_on_pages_need_a_key_and_never_show_it(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json", static_key=ADMIN)
    app, _ = _app(tmp_path, keys=keys)
    answer = _get(app, "/dashboard/jobs?status=failed", accept="text/html")
    assert answer.status_code == 401  # browser sign-in is off here: the refusal itself
    signed = _get(app, "/dashboard/jobs?status=failed", authorization=f"Bearer {ADMIN}")
    assert signed.status_code == 200 and "<h1>Jobs</h1>" in signed.text
    assert ADMIN not in signed.text


def test_a_key_sees_its_own_jobs_only_and_no_admin_pages(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json", static_key=ADMIN)
    mine = keys.create("mine")
    theirs = keys.create("theirs")
    app, service = _app(tmp_path, keys=keys)

    async def jobs() -> None:
        await service.store.enqueue(NewJob(id="job-mine", workflow=GRAPH, owner=mine.record.id))
        await service.store.enqueue(NewJob(id="job-theirs", workflow=GRAPH, owner=theirs.record.id))

    auth = {"authorization": f"Bearer {mine.token}"}
    listed = _get(app, "/dashboard/jobs", setup=jobs, **auth)
    assert 'data-job="job-mine"' in listed.text and "job-theirs" not in listed.text
    other = _get(app, "/dashboard/jobs/job-theirs", **auth)
    assert other.status_code == 404 and "no job 'job-theirs'" in html.unescape(other.text)
    settings = _get(app, "/dashboard/settings", **auth)
    assert settings.status_code == 200
    assert f"key {mine.record.id} lacks the &#39;admin&#39; scope this needs" in settings.text
    assert "Create key" not in settings.text and "hunter2" not in settings.text
    instances = _get(app, "/dashboard/instances", **auth)
    assert "Logs and control need an admin key." in instances.text
    assert "/restart" not in instances.text


def test_the_settings_page_shows_keys_and_configuration_without_secrets(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json", static_key=ADMIN)
    made = keys.create("ci-pipeline")
    app, _ = _app(tmp_path, keys=keys)
    page = _get(app, "/dashboard/settings", authorization=f"Bearer {ADMIN}")
    assert page.status_code == 200
    assert f'data-key="{made.record.id}"' in page.text and "ci-pipeline" in page.text
    assert "postgresql://fleet:***@db/fleet" in page.text
    for secret in (made.token, ADMIN, "hunter2", made.record.digest.hex()):
        assert secret not in page.text


def test_what_jobs_carry_is_shown_as_text_never_as_markup(tmp_path: Path) -> None:
    app, service = _app(tmp_path)
    hostile = "<script>alert(1)</script>"

    async def failed() -> None:
        store = service.store
        await store.enqueue(NewJob(id="bad", workflow={"1": {"class_type": hostile}}))
        await store.claim("w", lease_s=30)
        await store.fail("bad", "w", {"code": "x", "message": hostile}, retryable=False)

    page = _get(app, "/dashboard/jobs/bad", setup=failed)
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_a_live_part_is_the_fragment_htmx_swaps_in(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    part = _get(app, "/dashboard/jobs?part=live&status=queued")
    assert part.text.startswith('<div id="live" class="live"')
    assert 'hx-get="/dashboard/jobs?part=live&amp;status=queued' in part.text
    assert "<html" not in part.text


def test_the_run_page_builds_the_form_from_the_templates_parameters(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    page = _get(app, "/dashboard/run")
    assert 'data-template="txt2img"' in page.text  # the default choice
    for name in ("prompt", "negative", "seed", "steps", "cfg", "sampler", "width", "height"):
        assert f'data-field="{name}"' in page.text
    assert "novalidate" in page.text  # the API judges values, not the browser
    img2img = _get(app, "/dashboard/run?template=img2img")
    assert 'type="file" accept="image/*"' in img2img.text
    missing = _get(app, "/dashboard/run?template=nope")
    assert "no template named &#39;nope&#39;" in missing.text


def test_static_files_are_compressed_cached_by_version_and_nothing_else(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    page = _get(app, "/dashboard/")
    version = page.text.split("htmx.min.js?v=", 1)[1].split('"', 1)[0]
    url = f"/dashboard/static/htmx.min.js?v={version}"
    plain = _get(app, url, **{"accept-encoding": "identity"})
    packed = _get(app, url, **{"accept-encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    assert packed.content == plain.content  # httpx unpacks: the same file
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content
    assert packed.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert _get(app, "/dashboard/static/htmx.min.js").headers["cache-control"] == "no-cache"
    again = _get(app, url, **{"if-none-match": packed.headers["etag"]})
    assert again.status_code == 304
    for name in ("VENDORED.md", "..%2F_pages.py", "nope.js"):
        assert _get(app, f"/dashboard/static/{name}").status_code == 404
