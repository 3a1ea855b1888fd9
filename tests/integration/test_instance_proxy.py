"""The instances' own ComfyUI through a real `comfyfleet serve` (two CPU instances, keys on):
the editor at `/instances/0/` with its assets and socket, the home fallback, and browser sign-in,
checked the way a person with a browser, or a script with a key, would check them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.comfyui_env import workspace_sharing
from tests.integration.browser import chromium, screenshot, wait_for_editor
from tests.integration.serve import Server, serve_config

pytestmark = pytest.mark.comfyui

EVIL = "http://evil.example"


def keys_cli(ws: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "comfyfleet", "keys", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COMFYFLEET_WORKSPACE": str(ws)},
        check=True,
    )
    return proc.stdout.strip()


@dataclass
class Env:
    server: Server
    ws: Path
    admin: str
    reader: str

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=60, trust_env=False, **kwargs)

    def bearer(self, key: str | None = None) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {key or self.admin}"})

    def ws_url(self, path: str) -> str:
        return self.server.url.replace("http", "ws", 1) + path

    @contextlib.contextmanager
    def sign_in(self, key: str) -> Iterator[httpx.Client]:
        """A browser that signed in at /login: a client holding only the session cookie."""
        with self.client() as browser:
            answer = browser.post("/login", data={"key": key, "next": "/"})
            assert answer.status_code == 303, answer.text
            yield browser


@pytest.fixture(scope="module")
def env(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("proxy"))
    serve_config(
        ws,
        fleet={"probe_interval_s": 0.2, "startup_timeout_s": 120},
        auth={"enabled": True, "public_paths": ["/health", "/ready"]},
    )
    admin = keys_cli(ws, "create", "-n", "ops", "-q", "--scope", "admin")
    reader = keys_cli(ws, "create", "-n", "dashboard", "-q", "--scope", "read")
    server = Server(ws, instances=2).start()
    try:
        yield Env(server, ws, admin, reader)
    finally:
        server.close()


def _index_script(page: str) -> str:
    """The editor's entry script, as the page names it (`./assets/index-<hash>.js`)."""
    found = re.search(r'<script type="module"[^>]*src="\./(assets/index-[^"]+\.js)"', page)
    assert found, page[:500]
    return found.group(1)


def _status_message(url: str, **kwargs: Any) -> dict[str, Any]:
    """The first message ComfyUI sends on its socket (`status`, with the session id)."""
    with connect(url, open_timeout=10, **kwargs) as sock:
        while True:
            frame = sock.recv(timeout=30)
            if isinstance(frame, str):
                message: dict[str, Any] = json.loads(frame)
                return message


# --- the proxy ---------------------------------------------------------------------------------


def test_an_instances_editor_loads_through_its_prefix(env: Env) -> None:
    with env.bearer() as client:
        page = client.get("/instances/0/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>ComfyUI</title>" in page.text
        script = client.get(f"/instances/0/{_index_script(page.text)}")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert len(script.content) > 10_000
        stats = client.get("/instances/0/api/system_stats")  # the editor's relative ./api/...
        assert stats.status_code == 200 and "system" in stats.json()
        bare = client.get("/instances/0")
        assert (bare.status_code, bare.headers["location"]) == (308, "/instances/0/")


def test_each_instance_is_its_own_comfyui(env: Env) -> None:
    with env.bearer() as client:
        fleet = client.get("/v1/instances").json()["instances"]
        ports = {i["index"]: i["base_url"].rsplit(":", 1)[1] for i in fleet}
        for index in (0, 1):
            argv = client.get(f"/instances/{index}/api/system_stats").json()["system"]["argv"]
            assert ports[index] in argv  # each answered from its own port
        unknown = client.get("/instances/7/")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "instance_not_found"


def test_an_instances_socket_greets_with_its_status(env: Env) -> None:
    headers = {"Authorization": f"Bearer {env.admin}"}
    message = _status_message(env.ws_url("/instances/1/ws?clientId=x"), additional_headers=headers)
    assert message["type"] == "status"
    assert message["data"]["sid"] == "x"
    assert "exec_info" in message["data"]["status"]


def test_what_the_gateway_has_no_route_for_is_answered_by_the_home_instance(env: Env) -> None:
    with env.bearer() as client:
        settings = client.get("/api/settings")
        assert settings.status_code == 200 and isinstance(settings.json(), dict)
        users = client.get("/api/users")
        assert users.status_code == 200 and "storage" in users.json()
        index = client.get("/")
        assert index.status_code == 200 and "<title>ComfyUI</title>" in index.text
        nope = client.get("/v1/nope")
        assert nope.status_code == 404
        assert nope.json() == {
            "error": {"code": "not_found", "message": "Not Found", "details": None}
        }
        assert client.get("/health").json() == {"status": "ok"}  # the gateway's own routes win


def test_the_editors_need_the_ui_scope(env: Env) -> None:
    with env.bearer(env.reader) as client:
        for path in ("/instances/0/", "/api/settings"):
            refused = client.get(path)
            assert refused.status_code == 403
            assert refused.json()["error"]["details"]["needs"] == "admin"
        assert client.get("/v1/jobs").status_code == 200  # its own API still works


# --- signing in -------------------------------------------------------------------------------


def test_without_a_key_an_api_client_gets_401_and_a_browser_the_sign_in_page(env: Env) -> None:
    with env.client() as anonymous:
        api = anonymous.get("/instances/0/", headers={"Accept": "application/json"})
        assert api.status_code == 401
        assert api.json()["error"]["code"] == "unauthorized"
        browser = anonymous.get("/instances/0/", headers={"Accept": "text/html,*/*;q=0.8"})
        assert browser.status_code == 303
        assert browser.headers["location"] == "/login?next=%2Finstances%2F0%2F"
        form = anonymous.get(browser.headers["location"])
        assert form.status_code == 200
        assert '<form method=post action="/login">' in form.text
        assert 'value="/instances/0/"' in form.text


def test_basic_auth_with_the_key_as_password_works(env: Env) -> None:
    with env.client(auth=("anyone", env.admin)) as client:
        page = client.get("/instances/0/")
        assert page.status_code == 200 and "<title>ComfyUI</title>" in page.text
    with env.client(auth=("anyone", "cf_nope")) as client:
        assert client.get("/instances/0/").status_code == 401


def test_signing_in_gives_a_cookie_that_opens_the_editor(env: Env) -> None:
    with env.client() as browser:
        answer = browser.post("/login", data={"key": env.admin, "next": "/instances/0/"})
        assert (answer.status_code, answer.headers["location"]) == (303, "/instances/0/")
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("comfyfleet_session=")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        assert env.admin not in cookie
        page = browser.get("/instances/0/")
        assert page.status_code == 200 and "<title>ComfyUI</title>" in page.text
        assert browser.get("/api/settings").status_code == 200

        same_site = {"Origin": env.server.url}
        saved = browser.post(
            "/instances/0/api/settings/Comfy.ProxyTest", json="yes", headers=same_site
        )
        assert saved.status_code == 200
        assert browser.get("/instances/0/api/settings/Comfy.ProxyTest").json() == "yes"

        forged = browser.post(
            "/instances/0/api/settings/Comfy.ProxyTest", json="no", headers={"Origin": EVIL}
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "cross_origin"
        no_origin = browser.post("/instances/0/api/settings/Comfy.ProxyTest", json="no")
        assert no_origin.status_code == 403
        assert browser.get("/instances/0/api/settings/Comfy.ProxyTest").json() == "yes"


def test_a_signed_in_browsers_socket_needs_its_own_origin(env: Env) -> None:
    with env.sign_in(env.admin) as browser:
        cookie = f"comfyfleet_session={browser.cookies['comfyfleet_session']}"
    url = env.ws_url("/instances/0/ws?clientId=y")
    message = _status_message(url, additional_headers={"Cookie": cookie}, origin=env.server.url)
    assert message["type"] == "status"
    with pytest.raises(InvalidStatus) as refused:
        _status_message(url, additional_headers={"Cookie": cookie}, origin=EVIL)
    assert refused.value.response.status_code == 403


def test_a_wrong_key_or_a_foreign_next_do_not_sign_in_or_leave_the_site(env: Env) -> None:
    with env.client() as browser:
        wrong = browser.post("/login", data={"key": "cf_nope", "next": "/"})
        assert wrong.status_code == 401
        assert "That key is not valid" in wrong.text
        assert "set-cookie" not in wrong.headers
        for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            answer = browser.post("/login", data={"key": env.admin, "next": target})
            assert (answer.status_code, answer.headers["location"]) == (303, "/")
        cross = browser.post(
            "/login",
            data={"key": env.admin},
            headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403


def test_revoking_the_key_ends_its_sessions(env: Env) -> None:
    key = keys_cli(env.ws, "create", "-n", "laptop", "-q", "--scope", "admin")
    with env.sign_in(key) as browser:
        assert browser.get("/instances/0/").status_code == 200
        keys_cli(env.ws, "revoke", key.split("_")[1])
        api = browser.get("/instances/0/", headers={"Accept": "application/json"})
        assert api.status_code == 401
        assert "session has ended" in api.json()["error"]["message"]
        page = browser.get("/instances/0/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")


def test_signing_out_clears_the_cookie(env: Env) -> None:
    with env.sign_in(env.admin) as browser:
        out = browser.post("/logout", headers={"Origin": env.server.url})
        assert (out.status_code, out.headers["location"]) == (303, "/login")
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert browser.get("/instances/0/", headers={"Accept": "text/html"}).status_code == 303


def test_in_a_browser_the_sign_in_page_gates_the_editor_and_each_instances_editor(
    env: Env,
) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(env.server.url + "/instances/0/")
        assert page.title() == "Sign in · comfyfleet"
        page.fill("#key", "cf_not_a_key")
        page.click("button[type=submit]")
        assert page.locator("#error").is_visible()
        assert page.title() == "Sign in · comfyfleet"
        screenshot(page, "sign-in-refused.png")
        page.fill("#key", env.admin)
        page.click("button[type=submit]")
        page.wait_for_url(env.server.url + "/instances/0/")
        wait_for_editor(page)
        assert page.evaluate("() => window.app.api.api_base") == "/instances/0"
        page.goto(env.server.url + "/")
        wait_for_editor(page)  # the same session opens the fleet's editor too
        screenshot(page, "editor-after-sign-in.png")
        page.context.clear_cookies()
        page.goto(env.server.url + "/")
        assert page.title() == "Sign in · comfyfleet"
