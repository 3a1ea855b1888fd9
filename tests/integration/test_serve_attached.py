"""`serve --attach`: a real ComfyUI started by the test, outside comfyfleet, serves jobs beside a
supervised instance; killed mid-job it turns unreachable and its jobs finish on the supervised
one; started again it is ready again. A URL that answers HTTP but is not ComfyUI gets no jobs."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.serve import (
    PNG_SIGNATURE,
    Server,
    model_free_graph,
    serve_config,
    sleep_graph,
)

pytestmark = pytest.mark.comfyui


class OutsideComfy:
    """A ComfyUI that comfyfleet did not start: its own base directory (with the test nodes but
    not comfyfleet's runtime extension), its own input and output folders."""

    def __init__(self, install: Path, base: Path, port: int) -> None:
        self.install, self.base, self.port = install, base, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        nodes = base / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        (nodes / "comfyfleet-test-nodes").symlink_to(
            install / "custom_nodes" / "comfyfleet-test-nodes", target_is_directory=True
        )

    def start(self) -> None:
        log = (self.base / "comfyui.out").open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.install / "venv" / "bin" / "python"),
                "main.py",
                "--cpu",
                "--listen",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--base-directory",
                str(self.base),
                "--database-url",
                "sqlite:///:memory:",
                "--disable-auto-launch",
            ],
            cwd=self.install / "comfyui",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/system_stats", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"outside ComfyUI not ready: {self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def log(self) -> str:
        return (self.base / "comfyui.out").read_text(errors="replace")[-3000:]


class _NotComfy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>a web site, not ComfyUI</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def not_comfyui() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotComfy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _instances(server: Server) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.http.get("/v1/instances").json()["instances"]
    return found


def _wait_state(server: Server, index: int, states: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (state := _instances(server)[index]["state"]) not in states:
        assert time.monotonic() < deadline, f"instance {index} still {state}"
        time.sleep(0.1)


def _run_until_both(server: Server, seed: int) -> list[dict[str, Any]]:
    """Model-free jobs in bursts until both instances took some (routing is emptiest-first)."""
    jobs: list[dict[str, Any]] = []
    for burst in range(5):
        ids = [
            server.submit(model_free_graph(seed + burst * 10 + n)).json()["id"] for n in range(6)
        ]
        jobs += server.wait_all(ids, 120)
        if {j["instance"] for j in jobs} == {0, 1}:
            break
    return jobs


def test_attached_comfyui_serves_beside_a_supervised_one(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("attach"))
    serve_config(ws)
    outside = OutsideComfy(comfyui_install, tmp_path_factory.mktemp("outside"), free_port_block(1))
    outside.start()
    seed = time.time_ns() % 1_000_000_007
    with not_comfyui() as website:
        args = ("--attach", outside.url, "--attach", website)
        server = Server(ws, instances=1, args=args, serving=2)
        try:
            outside.wait_ready()
            server.start()
            _scenario(server, outside, website, seed)
        finally:
            server.close()
            outside.kill()


def _scenario(server: Server, outside: OutsideComfy, website: str, seed: int) -> None:
    first = _instances(server)
    assert [(i["index"], i["attached"]) for i in first] == [(0, False), (1, True), (2, True)]
    assert first[1]["url"] == outside.url and first[1]["state"] in ("ready", "busy")
    assert first[2]["url"] == website and first[2]["state"] == "not_comfyui"

    # Jobs run on both; outputs written on the attached server come back through the gateway.
    jobs = _run_until_both(server, seed)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["instance"] for j in jobs} == {0, 1}
    remote_job = next(j for j in jobs if j["instance"] == 1)
    image = server.http.get(remote_job["outputs"][0]["url"])
    assert image.status_code == 200 and image.content.startswith(PNG_SIGNATURE)
    events = server.http.get(f"/v1/jobs/{remote_job['id']}/events").text
    for kind in ("started", "executing", "executed"):
        assert f"event: {kind}" in events, events

    # Killed mid-job: unreachable, and its jobs complete on the supervised instance.
    ids = [server.submit(sleep_graph(4.0, seed + 100 + n)).json()["id"] for n in range(4)]
    deadline = time.monotonic() + 60
    while not any(server.job(i)["instance"] == 1 for i in ids):
        assert time.monotonic() < deadline, "no sleep job went to the attached server"
        time.sleep(0.05)
    on_attached = [i for i in ids if server.job(i)["instance"] == 1]
    time.sleep(1.0)  # inside the attached ComfyUI now, sleeping
    outside.kill()
    _wait_state(server, 1, {"unreachable"}, 30)
    done = server.wait_all(ids, 180)
    assert {j["status"] for j in done} == {"succeeded"}
    for job in done:
        if job["id"] in on_attached:
            assert job["instance"] == 0 and job["attempts"] == 2, job

    # Started again, it is ready again and takes jobs.
    outside.start()
    outside.wait_ready()
    _wait_state(server, 1, {"ready", "busy"}, 60)
    again = _run_until_both(server, seed + 1000)
    assert 1 in {j["instance"] for j in again}

    # The web site that is not ComfyUI never got a job.
    assert _instances(server)[2]["state"] == "not_comfyui"
    assert all(j["instance"] != 2 for j in [*jobs, *done, *again])


def test_a_gateway_in_front_of_attached_servers_only(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`--instances 0`: nothing supervised, and no ComfyUI installed in the workspace."""
    ws = tmp_path_factory.mktemp("gateway-only")
    serve_config(ws)
    outside = OutsideComfy(comfyui_install, tmp_path_factory.mktemp("outside"), free_port_block(1))
    outside.start()
    server = Server(ws, instances=0, args=("--attach", outside.url + "/"), serving=1)
    try:
        outside.wait_ready()
        server.start()
        seed = time.time_ns() % 1_000_000_007
        ids = [server.submit(model_free_graph(seed + n)).json()["id"] for n in range(3)]
        jobs = server.wait_all(ids, 120)
        assert {(j["status"], j["instance"]) for j in jobs} == {("succeeded", 0)}
        (only,) = _instances(server)
        assert only["attached"] and only["url"] == outside.url
    finally:
        server.close()
        outside.kill()
