"""`comfyfleet keys` as a user runs it, and its keys at work on a running gateway.

The commands run as subprocesses of the installed `comfyfleet` script, against a temporary
workspace given by `COMFYFLEET_WORKSPACE`. The gateway is the real app (`create_app` on an
in-memory job store) behind the API key middleware, served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from comfyfleet.auth import ApiKeyMiddleware, AuthSettings, KeyStore, key_of, open_key_store
from comfyfleet.gateway import Service, create_app
from comfyfleet.jobs import MemoryJobStore

KEY = re.compile(r"cf_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")


def keys(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`comfyfleet keys ARGS` with the workspace from the environment, as a script would."""
    script = Path(sys.executable).with_name("comfyfleet")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "comfyfleet"]
    env = {**os.environ, "COMFYFLEET_WORKSPACE": str(ws), "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("COMFYFLEET_CONFIG", None)
    proc = subprocess.run(
        [*command, "keys", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ws.parent,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"comfyfleet keys {args} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


def key_file(ws: Path) -> Path:
    return ws / "state" / "api_keys.json"


def listed(ws: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(keys(ws, "list", "--json").stdout)["keys"]
    return entries


# --- the commands -------------------------------------------------------------------------------


def test_create_prints_the_key_once_and_it_verifies(ws: Path) -> None:
    out = keys(ws, "create", "--name", "ci-pipeline")
    [token] = out.stdout.split()  # the key, alone on stdout; the words go to stderr
    assert KEY.fullmatch(token)
    assert "shown again" in out.stderr and token not in out.stderr
    record = KeyStore(key_file(ws)).verify(token)
    assert record is not None and record.name == "ci-pipeline"
    assert stat.S_IMODE(key_file(ws).stat().st_mode) == 0o600
    assert token not in key_file(ws).read_text()


def test_quiet_prints_only_the_key(ws: Path) -> None:
    out = keys(ws, "create", "--name", "script", "--quiet")
    assert KEY.fullmatch(out.stdout.strip()) and out.stdout.count("\n") == 1
    assert out.stderr == ""


def test_list_shows_ids_names_and_hints_never_the_key(ws: Path) -> None:
    token = keys(ws, "create", "-n", "laptop", "-q").stdout.strip()
    key_id, secret = token.split("_")[1], token.split("_", 2)[2]
    table = keys(ws, "list").stdout
    assert key_id in table and "laptop" in table and "active" in table
    assert f"…{token[-4:]}" in table
    as_json = keys(ws, "list", "--json").stdout
    for shown in (table, as_json):
        assert secret not in shown and secret[:16] not in shown
    [entry] = json.loads(as_json)["keys"]
    assert entry["id"] == key_id and entry["status"] == "active"
    assert "sha256" not in entry and "digest" not in entry


def test_scopes_are_chosen_at_creation_and_listed(ws: Path) -> None:
    keys(ws, "create", "-n", "app", "-q")
    keys(ws, "create", "-n", "dashboard", "--scope", "read", "-q")
    made = keys(ws, "create", "-n", "ops", "--scope", "read,submit", "--scope", "admin")
    assert "scopes: submit,read,admin" in made.stderr
    by_name = {entry["name"]: entry["scopes"] for entry in listed(ws)}
    assert by_name == {
        "app": ["submit", "read"],
        "dashboard": ["read"],
        "ops": ["submit", "read", "admin"],
    }
    table = keys(ws, "list").stdout
    assert "scopes" in table and "submit,read,admin" in table
    bad = keys(ws, "create", "-n", "x", "--scope", "write", check=False)
    assert bad.returncode == 1 and "unknown scope 'write'" in bad.stderr
    assert len(listed(ws)) == 3


def test_revoke_refuses_the_key_from_then_on(ws: Path) -> None:
    token = keys(ws, "create", "-n", "leaked", "-q").stdout.strip()
    key_id = token.split("_")[1]
    out = keys(ws, "revoke", key_id)
    assert f"revoked key {key_id}" in out.stdout
    assert KeyStore(key_file(ws)).verify(token) is None
    assert [e["status"] for e in listed(ws)] == ["revoked"]
    assert "already revoked" in keys(ws, "revoke", key_id).stdout


def test_revoking_an_unknown_id_fails_and_says_so(ws: Path) -> None:
    out = keys(ws, "revoke", "nosuchid", check=False)
    assert out.returncode == 1
    assert "no API key with id 'nosuchid'" in out.stderr and "keys list" in out.stderr


def test_expires_in_sets_the_expiry_in_days(ws: Path) -> None:
    keys(ws, "create", "-n", "temp", "--expires-in", "0.5", "-q")
    [entry] = listed(ws)
    assert entry["expires_at"] - entry["created_at"] == pytest.approx(43200, abs=1)
    bad = keys(ws, "create", "-n", "never", "--expires-in", "0", check=False)
    assert bad.returncode == 1 and "lifetime must be positive" in bad.stderr


def test_a_missing_workspace_is_an_error_not_a_new_folder(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    out = keys(missing, "create", "-n", "x", check=False)
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert not missing.exists()


def test_list_of_an_empty_workspace_says_how_to_start(ws: Path) -> None:
    assert "comfyfleet keys create" in keys(ws, "list").stdout
    assert listed(ws) == []


# --- on a running gateway -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gateway:
    """The real gateway app behind the middleware, on uvicorn in a thread."""

    def __init__(self, ws: Path, tmp_path: Path) -> None:
        service = Service(store=MemoryJobStore(), output_dir=tmp_path / "out")
        app = create_app(service)

        async def whoami(websocket: WebSocket) -> None:
            await websocket.accept()
            record = key_of(websocket.scope)
            await websocket.send_text(record.id if record else "")
            await websocket.close()

        app.add_api_websocket_route("/v1/whoami", whoami)
        store = open_key_store(AuthSettings(enabled=True), ws / "state")
        self.port = _free_port()
        config = uvicorn.Config(
            ApiKeyMiddleware(app, store),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=True,
            lifespan="off",
            ws="websockets-sansio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def gateway(ws: Path, tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(ws, tmp_path) as running:
        yield running


def test_cli_keys_work_on_a_running_gateway_without_restart(
    ws: Path, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok"}
        refused = http.get("/v1/jobs")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"

        token = keys(ws, "create", "-n", "live", "-q").stdout.strip()  # server already running
        auth = {"Authorization": f"Bearer {token}"}
        answer = http.get("/v1/jobs", headers=auth)
        assert answer.status_code == 200 and answer.json()["jobs"] == []

        keys(ws, "revoke", token.split("_")[1])
        gone = http.get("/v1/jobs", headers=auth)
        assert gone.status_code == 401 and token not in gone.text

    assert '"GET /v1/jobs HTTP/1.1" 200' in caplog.text  # the access log was on ...
    assert token not in caplog.text and token[12:] not in caplog.text  # ... and holds no key


def test_a_browser_style_websocket_connects_with_the_key_as_subprotocol(
    ws: Path, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = keys(ws, "create", "-n", "browser", "-q").stdout.strip()
    url = f"ws://127.0.0.1:{gateway.port}/v1/whoami"
    offered = [Subprotocol("bearer"), Subprotocol(f"bearer.{token}")]
    with connect(url, subprotocols=offered, open_timeout=10) as conn:
        assert conn.subprotocol == "bearer"
        assert conn.recv(timeout=10) == token.split("_")[1]
    with pytest.raises(InvalidStatus) as caught:
        connect(url, open_timeout=10)
    assert caught.value.response.status_code == 401
    assert token not in caplog.text
