"""Hostile and careless requests against a real `comfyfleet serve` (issue 16): every one is
answered 2xx or 4xx in the error shape, names what was wrong, stores nothing when refused, and
leaves the server (and the connection) answering everyone else.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config

pytestmark = pytest.mark.comfyui

JSON = {"content-type": "application/json"}
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("hostile"))
    serve_config(
        ws,
        models_root=str(comfyui_install / "models"),
        serve={"body_timeout_s": BODY_TIMEOUT_S},
    )
    running = Server(ws, instances=1).start()
    yield running
    running.close()


def stored_ids(server: Server) -> set[str]:
    answer = server.http.get("/v1/jobs", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return {job["id"] for job in answer.json()["jobs"]}


def post_raw(server: Server, text: str, **headers: str) -> httpx.Response:
    return server.http.post("/v1/jobs", content=text.encode(), headers={**JSON, **headers})


def refused(server: Server, answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error object of an answer, after checking its status and code."""
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    return error


def raw_body(**fields: str) -> str:
    """A JSON object from fields given as JSON text, so that they may hold what `json.dumps`
    never writes (NaN, 1e999, lone surrogate escapes)."""
    return "{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}"


def graph_text(cfg: str) -> str:
    graph = json.dumps(model_free_graph(1)).replace('"batch_size": 1', f'"batch_size": {cfg}')
    return raw_body(workflow=graph)


@pytest.mark.parametrize(
    ("literal", "shown"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e999", "Infinity")],
)
def test_non_finite_graph_inputs_are_refused_naming_node_and_input(
    server: Server, literal: str, shown: str
) -> None:
    before = stored_ids(server)
    error = refused(server, post_raw(server, graph_text(literal)), 422, "invalid_number")
    assert error["message"] == (
        f"node 1 (EmptyImage): input 'batch_size' is {shown}: numbers must be finite"
        " (1e999 and the like overflow to Infinity)"
    )
    assert error["details"]["node_id"] == "1" and error["details"]["input"] == "batch_size"
    assert stored_ids(server) == before


def test_lone_surrogates_are_a_400_naming_where(server: Server) -> None:
    before = stored_ids(server)
    text = graph_text("1").replace('"img"', '"\\udc80x"')
    error = refused(server, post_raw(server, text), 400, "invalid_string")
    assert error["message"].startswith("node 3 (SaveImage): input 'filename_prefix' has a lone")
    in_id = post_raw(server, '{"workflow": {}, "id": "a\\ud800"}')
    assert refused(server, in_id, 400, "invalid_string")["message"].startswith("'id' has a lone")
    assert stored_ids(server) == before


def test_webhook_events_must_be_known_and_a_refusal_stores_nothing(server: Server) -> None:
    before = stored_ids(server)
    workflow = json.dumps(model_free_graph(2))

    def hook(event: str) -> str:
        return raw_body(url='"https://example.com/hook"', events=f"[{event}]")

    surrogate = post_raw(server, raw_body(workflow=workflow, webhook=hook('"\\ud800"')))
    assert refused(server, surrogate, 400, "invalid_string")["details"]["path"] == [
        "webhook",
        "events",
        0,
    ]
    nope = post_raw(server, raw_body(workflow=workflow, webhook=hook('"nope"')))
    error = refused(server, nope, 422, "invalid_webhook")
    assert error["message"].startswith("unknown webhook event 'nope'; known: job.cancel_requested")
    assert "job.succeeded" in error["details"]["known_events"]
    assert stored_ids(server) == before
    assert server.http.get("/v1/jobs").status_code == 200


@pytest.mark.parametrize("value", ["NaN", "1e999", "1" + "0" * 400, "604801", "0"])
def test_timeouts_must_be_finite_and_at_most_a_week(server: Server, value: str) -> None:
    before = stored_ids(server)
    text = raw_body(workflow=json.dumps(model_free_graph(3)), timeouts=raw_body(running_s=value))
    answer = post_raw(server, text)
    if value in ("NaN", "1e999"):
        error = refused(server, answer, 422, "invalid_number")
        assert error["message"].startswith("'timeouts.running_s' is ")
    else:
        error = refused(server, answer, 422, "invalid_timeouts")
        assert error["message"] == (
            "'timeouts.running_s' must be a number of seconds above 0 and at most 604800 (a week)"
        )
    assert stored_ids(server) == before


def test_a_huge_body_is_refused_while_health_keeps_answering(server: Server) -> None:
    """A 20 MB body of ~2M small keys: refused (413), and /health answers in under 50 ms
    the whole time it is read and scanned."""
    keys = ",".join(f'"k{i:07d}":1' for i in range(1_600_000))
    inputs = "{" + keys + "}"
    body = raw_body(workflow=raw_body(**{"1": raw_body(class_type='"X"', inputs=inputs)})).encode()
    assert len(body) > 19_000_000
    before = stored_ids(server)
    answers: list[httpx.Response] = []

    def submit() -> None:
        with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
            answers.append(client.post("/v1/jobs", content=body, headers=JSON))

    latencies: list[float] = []
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as probe:
        probe.get("/health")  # the connection is open before the timing starts
        sender = threading.Thread(target=submit)
        sender.start()
        while sender.is_alive():
            started = time.perf_counter()
            assert probe.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.001)  # the scan takes ~0.1 s now: probe often enough to see inside it
        sender.join()
    error = refused(server, answers[0], 413, "json_too_many_items")
    assert error["details"] == {"limit": 1_000_000, "setting": "serve.max_json_items"}
    assert len(latencies) > 10
    # p95, not max: on a shared CPU one probe in a few dozen can wait on the scheduler, not the
    # server (bench/parse_stall.py reports the max as well).
    assert sorted(latencies)[int(len(latencies) * 0.95)] < 0.05, sorted(latencies)[-5:]
    assert stored_ids(server) == before


def test_a_100k_node_graph_is_accepted(server: Server) -> None:
    """Accepted with a 202 well under the 14.8 s it took when the gateway placed the graph on an
    instance before answering. The 1 s goal is not met yet: the SQLite store serialises the graph
    on the event loop, and the dispatcher's fill loop handles it on the loop right after."""
    graph: dict[str, Any] = {"1": model_free_graph(4)["1"]}
    for index in range(2, 100_001):
        graph[str(index)] = {"class_type": "ImageInvert", "inputs": {"image": [str(index - 1), 0]}}
    body = json.dumps({"workflow": graph, "id": "hundred-k"})
    started = time.perf_counter()
    answer = server.http.post("/v1/jobs", content=body, headers=JSON)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 202, answer.text
    assert answer.json()["id"] == "hundred-k"
    server.http.post("/v1/jobs/hundred-k/cancel")
    assert elapsed < 10.0


def test_one_node_more_than_the_limit_is_a_413(server: Server) -> None:
    graph = {str(i): {"class_type": "ImageInvert", "inputs": {}} for i in range(100_001)}
    answer = server.http.post("/v1/jobs", json={"workflow": graph})
    error = refused(server, answer, 413, "too_many_nodes")
    assert error["message"] == "the workflow has 100001 nodes; this server takes at most 100000"


def test_what_made_500s_is_a_4xx_and_the_connection_stays_usable(server: Server) -> None:
    before = stored_ids(server)
    http = server.http
    deep = post_raw(server, '{"workflow": ' + "[" * 990 + "]" * 990 + "}")
    assert refused(server, deep, 413, "json_too_deep")["details"]["limit"] == 64
    priority = http.post("/v1/jobs", json={"workflow": model_free_graph(5), "priority": 2**63})
    assert refused(server, priority, 422, "invalid_request")["message"] == (
        "'priority' must be an integer from -2147483648 to 2147483647"
    )
    long_part = http.get("/v1/outputs/some-job/" + "a" * 300 + ".png")
    assert refused(server, long_part, 400, "invalid_path")["message"] == (
        "each part of an output path must be 1-255 bytes, without NUL"
    )
    job = http.post("/v1/jobs", json={"workflow": model_free_graph(6)}).json()["id"]
    after = http.get(f"/v1/jobs/{job}/events", params={"after": 2**63})
    assert refused(server, after, 422, "invalid_request")["message"].startswith("query.after:")
    resumed = http.get(f"/v1/jobs/{job}/events", headers={"Last-Event-ID": str(2**63)})
    assert refused(server, resumed, 400, "invalid_event_id")["message"] == (
        f"Last-Event-ID must be the id of an event this API sent, not '{2**63}'"
    )
    assert stored_ids(server) == before | {job}
    assert http.get("/health").status_code == 200  # same client, same pool: still answering


@pytest.mark.parametrize("url", ["http://[::1/m", "http://example.com:99999/m.safetensors"])
def test_a_malformed_model_url_is_a_422_naming_the_loader(server: Server, url: str) -> None:
    before = stored_ids(server)
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": url}}}
    error = refused(
        server, server.http.post("/v1/jobs", json={"workflow": graph}), 422, "input_refused"
    )
    assert error["message"].startswith(
        "node 1 (CheckpointLoaderSimple): input 'ckpt_name': the model URL is malformed"
    )
    assert stored_ids(server) == before


def test_a_multipart_boundary_over_70_characters_is_a_400(server: Server) -> None:
    boundary = "b" * 300
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=file\r\n\r\nx\r\n--{boundary}--"
    answer = server.http.post(
        "/v1/assets",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert refused(server, answer, 400, "invalid_multipart")["message"] == (
        "the multipart Content-Type needs a boundary of 1-70 characters (this one has 300)"
    )


def test_websocket_commands_that_dropped_the_socket_get_an_error_message(server: Server) -> None:
    job = server.http.post("/v1/jobs", json={"workflow": model_free_graph(7)}).json()["id"]
    with websockets.sync.client.connect(server.url.replace("http", "ws") + "/v1/ws") as ws:
        ws.send('{"op": "ping", "x": ' + "[" * 500 + "]" * 500 + "}")
        deep = json.loads(ws.recv(timeout=10))
        assert deep["event"] == "error" and deep["data"]["code"] == "json_too_deep"
        ws.send(json.dumps({"op": "subscribe", "job_id": job, "after": 10**30}))
        far = json.loads(ws.recv(timeout=10))
        message = f'"after" must be the seq of an event (an integer from 0 to {2**63 - 1})'
        assert far == {
            "job_id": job,
            "seq": None,
            "event": "error",
            "data": {"code": "invalid_command", "message": message},
        }
        ws.send('{"op": "ping"}')
        assert json.loads(ws.recv(timeout=10))["event"] == "pong"


def test_an_id_with_a_trailing_newline_is_refused(server: Server) -> None:
    before = stored_ids(server)
    answer = server.http.post("/v1/jobs", json={"workflow": model_free_graph(8), "id": "x\n"})
    assert refused(server, answer, 422, "invalid_request")["message"] == (
        "'id' must be 1-128 letters, digits, '.', '_' or '-'"
    )
    assert stored_ids(server) == before


def test_a_body_that_stops_arriving_gets_408_and_leaves_no_temp_file(server: Server) -> None:
    head = (
        "POST /v1/assets HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT_S + 10) as sock:
        sock.sendall(head.encode() + b"ab")
        started = time.monotonic()
        first = sock.recv(65536)
        waited = time.monotonic() - started
        rest = b""  # the head and the body may come in separate segments; the server closes
        while chunk := sock.recv(65536):
            rest += chunk
        answer = (first + rest).decode()
    assert answer.startswith("HTTP/1.1 408 ")
    assert '"code":"body_timeout"' in answer and "connection: close" in answer.lower()
    assert BODY_TIMEOUT_S - 0.5 < waited < BODY_TIMEOUT_S + 5
    assert list((server.ws / "input" / "comfyfleet-assets").glob(".tmp-*")) == []


def test_a_client_that_goes_away_logs_no_traceback(server: Server) -> None:
    log = server.ws / "serve.out"
    start = log.stat().st_size
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"workflow": '
        )
        time.sleep(0.3)
    time.sleep(0.5)
    assert server.http.get("/health").status_code == 200
    written = log.read_bytes()[start:].decode()
    assert "Traceback" not in written, written


def test_a_cross_site_text_plain_post_cannot_submit(server: Server) -> None:
    before = stored_ids(server)
    body = json.dumps({"workflow": model_free_graph(9)}).encode()
    answer = server.http.post("/v1/jobs", content=body, headers={"content-type": "text/plain"})
    error = refused(server, answer, 415, "unsupported_media_type")
    assert error["message"] == (
        "the body must be JSON (Content-Type: application/json), not 'text/plain'"
    )
    assert stored_ids(server) == before
    typed = server.http.post(
        "/v1/jobs", content=body, headers={"content-type": "application/vnd.api+json"}
    )
    assert typed.status_code == 202, typed.text


def test_head_answers_where_get_does_for_health_and_ready(server: Server) -> None:
    assert server.http.head("/health").status_code == 200
    assert server.http.head("/ready").status_code == 200
