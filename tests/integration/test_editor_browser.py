"""The stock ComfyUI editor at the gateway's root, in real headless Chromium: its own Run button
queues the graph on the fleet, and the output image shows in the editor.

Debian's `chromium` driven by Playwright through `executable_path` (no browser download);
`.ci/run` installs it. Screenshots are kept under `test-artifacts/` at the project root.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.comfyui_env import workspace_sharing
from tests.integration.browser import chromium, open_editor, screenshot
from tests.integration.serve import Server, model_free_graph, serve_config

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("editor"))
    serve_config(ws)
    started = Server(ws, instances=2).start()
    # The editor's first visit opens its template gallery; a returning user's does not.
    started.http.post("/api/settings/Comfy.TutorialCompleted", json=True).raise_for_status()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _open_editor(browser: Browser, url: str) -> Page:
    return open_editor(browser, url + "/")


def _outputs(page: Page) -> dict[str, Any]:
    outputs: dict[str, Any] = page.evaluate("() => window.app.nodeOutputs || {}")
    return outputs


def test_the_editors_run_button_runs_the_graph_on_the_fleet(
    server: Server, browser: Browser
) -> None:
    page = _open_editor(browser, server.url)
    graph = model_free_graph(time.time_ns() % 1_000_000, "editor")
    page.evaluate("async (g) => { await window.app.loadApiJson(g, 'fleet'); }", graph)
    page.get_by_test_id("queue-button").first.click()
    shown = "() => Object.values(window.app.nodeOutputs || {}).some(o => o?.images?.length)"
    page.wait_for_function(shown, timeout=60_000)
    (image,) = _outputs(page)["3"]["images"]
    assert image["type"] == "output" and image["filename"].startswith("editor_")
    # The editor draws it from the fleet's /view, as the browser fetches it.
    fetched = page.evaluate(
        """async (i) => {
            const r = await fetch('/view?' + new URLSearchParams(i));
            return [r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength];
        }""",
        image,
    )
    assert fetched[0] == 200 and fetched[1] == "image/png" and fetched[2] > 0
    prompt_id = image["subfolder"]
    job = server.job(prompt_id)
    assert job["status"] == "succeeded" and job["instance"] in (0, 1)
    screenshot(page, "editor-on-the-fleet.png")
    page.close()


def test_several_graphs_queued_from_the_editor_run_on_both_instances(
    server: Server, browser: Browser
) -> None:
    page = _open_editor(browser, server.url)
    seed = time.time_ns() % 1_000_000
    sleep = {"class_type": "FleetSleep", "inputs": {"seconds": 1.0, "seed": seed}}
    ids = []
    for n in range(2):
        graph = model_free_graph(seed + n, f"editor-many-{n}") | {
            "4": sleep | {"inputs": {"seconds": 1.0, "seed": seed + n}}
        }
        page.evaluate("async (g) => { await window.app.loadApiJson(g, 'many'); }", graph)
        before = server.http.get("/api/jobs").json()["pagination"]["total"]
        page.get_by_test_id("queue-button").first.click()
        deadline = time.monotonic() + 30
        while server.http.get("/api/jobs").json()["pagination"]["total"] == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ids.append(server.http.get("/api/jobs", params={"limit": 1}).json()["jobs"][0]["id"])
    jobs = server.wait_all(ids, 60)
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert {j["instance"] for j in jobs} == {0, 1}
    started = [j["timings"]["started_at"] for j in jobs]
    finished = [j["timings"]["finished_at"] for j in jobs]
    assert max(started) < min(finished)  # they ran at the same time
    page.close()


def test_an_instances_own_editor_opens_under_its_prefix_and_runs_there(
    server: Server, browser: Browser
) -> None:
    """`/instances/1/` is that instance's own ComfyUI: its editor's Run goes to that instance
    alone, outside the fleet's queue, and its image comes back through the prefix."""
    # Each instance keeps its own user settings: this one has not seen the tutorial either.
    tutorial = "/instances/1/api/settings/Comfy.TutorialCompleted"
    server.http.post(tutorial, json=True).raise_for_status()
    page = open_editor(browser, server.url + "/instances/1/")
    before = server.http.get("/api/jobs").json()["pagination"]["total"]
    graph = model_free_graph(time.time_ns() % 1_000_000, "own-editor")
    page.evaluate("async (g) => { await window.app.loadApiJson(g, 'own'); }", graph)
    page.get_by_test_id("queue-button").first.click()
    shown = "() => Object.values(window.app.nodeOutputs || {}).some(o => o?.images?.length)"
    page.wait_for_function(shown, timeout=60_000)
    (image,) = _outputs(page)["3"]["images"]
    fetched = page.evaluate(
        """async (i) => {
            const r = await fetch('./api/view?' + new URLSearchParams(i));
            return [r.url, r.status, r.headers.get('content-type')];
        }""",
        image,
    )
    assert fetched[0].startswith(server.url + "/instances/1/api/view?")
    assert fetched[1:] == [200, "image/png"]
    assert server.http.get("/api/jobs").json()["pagination"]["total"] == before
    history = server.http.get("/instances/1/api/history", params={"max_items": 1}).json()
    assert [o["images"][0]["filename"] for o in (*history.values(),)[0]["outputs"].values()] == [
        image["filename"]
    ]
    screenshot(page, "editor-of-instance-1.png")
    page.close()
