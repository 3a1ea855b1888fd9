"""The dashboard end to end, in real headless Chromium against `comfyfleet serve` with two real
CPU instances, API keys on: sign in, watch the fleet, run a template from its form, cancel a
job, install a preset, control an instance and read its log, kill one and watch it come back,
manage keys, lose a session; every page checked with axe-core and photographed.

One server for the module (about ten seconds to start); tests run in file order, and the ones
that disturb the fleet (a restart, a kill -9) come last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.integration.axe import axe_script, serious_violations
from tests.integration.browser import ARTIFACTS, chromium
from tests.integration.dashboard_env import PRESET, PRESET_FILE, DashboardEnv, dashboard_env
from tests.integration.serve import model_free_graph, sleep_graph

pytestmark = pytest.mark.comfyui

WEIGHT_BUDGET = 150 * 1024
SEEN: dict[str, Any] = {}
"""What earlier tests found that later ones use (the template job's id)."""
RECORD_PROGRESS = """
window.__progress = [];
setInterval(() => {
  for (const bar of document.querySelectorAll('[data-watch] progress, [data-node] progress')) {
    if (!bar.hidden) window.__progress.push(Number(bar.value));
  }
}, 15);
"""


@pytest.fixture(scope="module")
def env(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    with dashboard_env(comfyui_install, tmp_path_factory.mktemp("dashboard")) as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(RECORD_PROGRESS)
    return context


def _sign_in(page: Page, env: DashboardEnv, token: str | None = None) -> None:
    """On the sign-in page: the key, then back where the browser was going."""
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#key", token or env.admin_token)
    page.click("button[type=submit]")


def _signed_in(browser: Browser, env: DashboardEnv, path: str = "/dashboard/") -> Page:
    page = _context(browser).new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(env.url + path)
    _sign_in(page, env)
    page.wait_for_url(env.url + path)
    return page


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _pill(page: Page, instance: str) -> str:
    return page.locator(f'[data-instance="{instance}"] .pill').first.inner_text()


def test_signing_in_shows_both_instances_ready_in_a_light_first_load(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _context(browser).new_page()
    page.goto(env.url + "/dashboard/")
    _sign_in(page, env)
    page.wait_for_url(env.url + "/dashboard/")
    page.wait_for_load_state("load")
    weight = page.evaluate(
        """() => performance.getEntriesByType('navigation').concat(
              performance.getEntriesByType('resource'))
            .map(e => ({name: e.name, bytes: e.transferSize}))"""
    )
    total = sum(entry["bytes"] for entry in weight)
    print(f"overview first load: {total} bytes in {len(weight)} requests")
    for entry in weight:
        print(f"  {entry['bytes']:>7}  {entry['name']}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard-weight.json").write_text(json.dumps(weight, indent=1))
    fetched = {e["name"].split("?")[0].rsplit("/", 1)[1] for e in weight if e["bytes"] > 500}
    assert {"htmx.min.js", "dashboard.js", "dashboard.css"} <= fetched  # over the wire, no cache
    assert total < WEIGHT_BUDGET
    for instance in ("0", "1"):
        expect(page.locator(f'[data-instance="{instance}"] .pill')).to_have_text("ready")
    expect(page.locator(".card.machine")).to_have_count(1)
    _shot(page, "dashboard-overview.png")
    page.context.close()


def test_a_template_runs_from_its_form_with_progress_and_its_image_in_the_gallery(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _signed_in(browser, env, "/dashboard/run?template=txt2img")
    # A value out of bounds: the API's own message, next to its field.
    page.fill("#f-width", "4000")
    page.click("form.run-form button[type=submit]")
    expect(page.locator("#e-width")).to_have_text(
        "parameter 'width' must be at most 2048 (got 4000)"
    )
    expect(page.locator("#f-width")).to_have_attribute("aria-invalid", "true")
    assert page.url.endswith("/dashboard/run?template=txt2img")  # nothing was run
    for field, value in (("width", "64"), ("height", "64"), ("steps", "8")):
        page.fill(f"#f-{field}", value)
    page.fill("#f-prompt", "a grey cat on a red sofa")
    page.click("form.run-form button[type=submit]")
    page.wait_for_url(re.compile(r"/dashboard/jobs/[0-9a-f]{32}$"))
    job_id = page.url.rsplit("/", 1)[1]
    SEEN["job"] = job_id
    image = page.locator(".gallery img").first
    expect(image).to_be_visible(timeout=180_000)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 64", arg=image.element_handle()
    )
    expect(page.locator("#live .pill").first).to_have_text("succeeded")
    seen = page.evaluate("() => window.__progress")
    moving = [value for value in seen if 0 < value < 100]
    assert moving, f"the sampler's progress was never seen between 0 and 100: {seen[-20:]}"
    expect(page.locator('[data-node="3"]')).to_have_attribute("data-state", "done")
    job = env.server.job(job_id)
    assert job["status"] == "succeeded"
    assert job["options"]["template"]["params"]["width"] == 64
    assert job["options"]["template"]["params"]["prompt"] == "a grey cat on a red sofa"
    _shot(page, "dashboard-job-run.png")
    page.context.close()


def test_a_finished_job_downloads_opens_in_the_editor_and_runs_again(
    browser: Browser, env: DashboardEnv, tmp_path: Path
) -> None:
    old = SEEN["job"]
    page = _signed_in(browser, env, f"/dashboard/jobs/{old}")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download workflow").click()
    graph = json.loads(Path(download.value.path()).read_text())
    assert graph["3"]["class_type"] == "KSampler" and graph["3"]["inputs"]["steps"] == 8
    with page.context.expect_page() as opened:
        page.get_by_role("button", name="Open in editor").click()
    editor = opened.value
    editor.wait_for_function(
        """() => window.app && window.app.graph && window.app.graph.nodes.some(n =>
            n.type === 'KSampler' && n.widgets.some(w => w.name === 'steps' && w.value === 8))""",
        timeout=90_000,
    )
    editor.close()
    page.get_by_role("button", name="Retry as a new job").click()
    page.wait_for_url(re.compile(r"/dashboard/jobs/(?!" + old + r")[0-9a-f]{32}$"))
    expect(page.locator("#live .pill").first).to_have_text("succeeded", timeout=180_000)
    again = env.server.job(page.url.rsplit("/", 1)[1])
    assert again["options"]["retry_of"] == old and again["status"] == "succeeded"
    page.context.close()


def test_a_workflow_file_runs_and_one_the_api_refuses_shows_its_message(
    browser: Browser, env: DashboardEnv, tmp_path: Path
) -> None:
    good = tmp_path / "inverted.json"
    good.write_text(json.dumps(model_free_graph(time.time_ns() % 1_000_000, "dropped")))
    bad = tmp_path / "unknown.json"
    bad.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    page = _signed_in(browser, env, "/dashboard/run")
    drop = page.get_by_role("button", name="Workflow file")
    drop.set_input_files(str(bad))
    expect(page.locator("[x-data=workflowDrop] .form-error")).to_contain_text(
        "unknown node type 'NoSuchNode'"
    )
    drop.set_input_files(str(good))
    page.wait_for_url(re.compile(r"/dashboard/jobs/[0-9a-f]{32}$"))
    expect(page.locator("#live .pill").first).to_have_text("succeeded", timeout=60_000)
    expect(page.locator(".gallery img")).to_have_count(1)
    page.context.close()


def test_an_image_parameter_is_uploaded_from_the_form(
    browser: Browser, env: DashboardEnv, tmp_path: Path
) -> None:
    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture)
    digest = hashlib.sha256(picture.read_bytes()).hexdigest()
    page = _signed_in(browser, env, "/dashboard/run?template=img2img")
    page.set_input_files("#f-image", str(picture))
    page.fill("#f-steps", "2")
    page.click("form.run-form button[type=submit]")
    page.wait_for_url(re.compile(r"/dashboard/jobs/[0-9a-f]{32}$"), timeout=30_000)
    image = page.locator(".gallery img").first
    expect(image).to_be_visible(timeout=180_000)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 64", arg=image.element_handle()
    )
    job_id = page.url.rsplit("/", 1)[1]
    graph = env.server.http.get(f"/v1/jobs/{job_id}/workflow").json()
    assert graph["10"]["inputs"]["image"] == f"comfyfleet-assets/{digest}.png"
    page.context.close()


def test_a_running_sleep_job_is_cancelled_from_its_page(
    browser: Browser, env: DashboardEnv
) -> None:
    submitted = env.server.submit(sleep_graph(120.0, time.time_ns() % 1_000_000))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 60
    while env.server.job(job_id)["status"] != "running":
        assert time.monotonic() < deadline, "the sleep job never started"
        time.sleep(0.2)
    page = _signed_in(browser, env, f"/dashboard/jobs/{job_id}")
    expect(page.locator("#live .pill").first).to_have_text("running")
    started = time.monotonic()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#live .pill").first).to_have_text("cancelled", timeout=30_000)
    assert env.server.job(job_id)["status"] == "cancelled"
    assert time.monotonic() - started < 30
    expect(page.get_by_role("button", name="Retry as a new job")).to_be_visible()
    page.context.close()


def test_a_preset_installs_with_its_progress_bar_reaching_100_and_its_file_is_removed(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _signed_in(browser, env, "/dashboard/models")
    row = page.locator(f'[data-preset="{PRESET}"]')
    expect(row.locator(".pill")).to_have_text("1 of 1 missing")
    row.evaluate("el => el.setAttribute('data-watch', '')")
    row.get_by_role("button", name="Install").click()
    bar = row.locator("progress")
    page.wait_for_function("bar => bar.value === 100", arg=bar.element_handle(), timeout=60_000)
    expect(row.locator(".install-progress")).to_contain_text("installed")
    seen = page.evaluate("() => window.__progress")
    assert any(0 < value < 100 for value in seen), f"no progress between 0 and 100: {seen[-20:]}"
    assert (env.models / "loras" / PRESET_FILE).is_file()
    # The page then shows the preset installed (it reloads itself after the install).
    expect(page.locator(f'[data-preset="{PRESET}"] .pill')).to_have_text("installed")
    installed = page.locator(f'[data-model="loras/{PRESET_FILE}"]')
    expect(installed).to_be_visible()
    installed.get_by_role("button", name="Remove").click()  # the dialog is accepted
    expect(page.locator(f'[data-model="loras/{PRESET_FILE}"]')).to_have_count(0)
    assert not (env.models / "loras" / PRESET_FILE).exists()
    expect(page.locator(f'[data-preset="{PRESET}"] .pill')).to_have_text("1 of 1 missing")
    page.context.close()


def test_a_key_made_on_the_page_works_until_it_is_revoked_there(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _signed_in(browser, env, "/dashboard/settings")
    page.fill("#k-name", "e2e-client")
    page.get_by_role("button", name="Create key").click()
    shown = page.locator(".new-key .token")
    expect(shown).to_have_text(re.compile(r"^cf_[a-z0-9]{8}_[A-Za-z0-9_-]{43}$"))
    expect(page.locator(".new-key")).to_be_visible()
    token = shown.inner_text()
    key_id = token.split("_")[1]
    expect(page.locator(f'[data-key="{key_id}"] .pill')).to_have_text("active")
    with httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.get("/v1/jobs").status_code == 200
        page.locator(f'[data-key="{key_id}"]').get_by_role("button", name="Revoke").click()
        expect(page.locator(f'[data-key="{key_id}"] .pill')).to_have_text("revoked")
        refused = client.get("/v1/jobs")
        assert refused.status_code == 401
        assert refused.json()["error"]["message"].startswith("the API key is not valid")
    assert token not in page.content()  # after the reload the key's text is gone for good
    page.context.close()


def test_an_ended_session_returns_to_the_sign_in_page_and_back(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _signed_in(browser, env, "/dashboard/jobs?status=succeeded")
    page.context.clear_cookies()  # as when the session expires or its key is revoked
    # The page's next live refresh is refused: the browser goes to sign in, then comes back.
    page.wait_for_url(re.compile(r"/login\?next="), timeout=15_000)
    _sign_in(page, env)
    page.wait_for_url(env.url + "/dashboard/jobs?status=succeeded")
    expect(page.locator("h1")).to_have_text("Jobs")
    page.context.close()


def test_every_page_has_no_serious_accessibility_violation(
    browser: Browser, env: DashboardEnv
) -> None:
    source = axe_script()
    page = _signed_in(browser, env)
    page.set_content("<main><img src='x.png'><button></button></main>")  # axe sees these
    assert {v["id"] for v in serious_violations(page, source)} >= {"image-alt", "button-name"}
    pages = {
        "overview": "/dashboard/",
        "jobs": "/dashboard/jobs",
        "job": f"/dashboard/jobs/{SEEN.get('job', 'none')}",
        "run": "/dashboard/run?template=txt2img",
        "models": "/dashboard/models",
        "instances": "/dashboard/instances",
        "settings": "/dashboard/settings",
    }
    found: dict[str, list[dict[str, Any]]] = {}
    for name, path in pages.items():
        page.goto(env.url + path)
        page.wait_for_load_state("networkidle")
        found[name] = serious_violations(page, source)
        _shot(page, f"dashboard-{name}.png")
    print(
        "axe-core serious or critical violations per page:", {k: len(v) for k, v in found.items()}
    )
    (ARTIFACTS / "dashboard-axe.json").write_text(json.dumps(found, indent=1))
    assert found == {name: [] for name in pages}
    page.context.close()


def test_an_instance_is_restarted_from_its_page_and_its_log_reads_live(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _signed_in(browser, env, "/dashboard/instances")
    logs = page.locator(".log-panel pre.log")
    expect(logs).to_have_count(2, timeout=15_000)
    expect(logs.first).to_contain_text("To see the GUI go to")
    before = _instance(env, 1)
    card = page.locator('[data-instance="1"]')
    card.get_by_role("button", name="Restart").click()
    # A restart from the fork server can be back to ready in well under one refresh, so the
    # page is checked for what stays: one more restart, a new process, ready again.
    restarts = page.locator('[data-instance="1"] .facts div', has_text="Restarts").locator("dd")
    expect(restarts).to_have_text(str(before["restarts"] + 1), timeout=120_000)
    expect(page.locator('[data-instance="1"] .pill')).to_have_text("ready", timeout=120_000)
    after = _instance(env, 1)
    assert after["pid"] != before["pid"]
    assert after["restarts"] == before["restarts"] + 1
    pid = page.locator('[data-instance="1"] .facts div', has_text="PID").locator("dd")
    expect(pid).to_have_text(str(after["pid"]))
    # The new process's start is in the log the page shows.
    expect(page.locator(".log-panel").nth(1)).to_contain_text(f"started pid {after['pid']}")
    page.context.close()


def test_a_killed_instance_goes_to_backoff_and_back_to_ready_without_a_reload(
    browser: Browser, env: DashboardEnv
) -> None:
    page = _signed_in(browser, env)
    page.evaluate("() => { window.__sameDocument = true; }")
    pid = _instance(env, 0)["pid"]
    os.kill(pid, signal.SIGKILL)
    expect(page.locator('[data-instance="0"] .pill')).to_have_text("backoff", timeout=20_000)
    _shot(page, "dashboard-backoff.png")
    expect(page.locator(".warning.bad").first).to_contain_text(
        "Instance 0: backoff (exited with signal SIGKILL"
    )
    expect(page.locator('[data-instance="0"] .pill')).to_have_text("ready", timeout=120_000)
    assert page.evaluate("() => window.__sameDocument") is True  # never reloaded
    assert _instance(env, 0)["pid"] != pid
    page.context.close()


def _instance(env: DashboardEnv, index: int) -> dict[str, Any]:
    instances = env.server.http.get("/v1/instances").json()["instances"]
    (found,) = [i for i in instances if i["index"] == index]
    return dict(found)
