"""The client's pure parts: the SSE reader, workflow inputs, errors, outputs, the webhook
check (against the server's own signer), where the API key goes, both surfaces alike, and
the package standing alone (stdlib and httpx only)."""

from __future__ import annotations

import ast
import asyncio
import base64
import inspect
import io
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import comfyfleet.client as client_package
from comfyfleet.client import (
    ApiError,
    AsyncClient,
    AsyncJob,
    Client,
    ComfyfleetClientError,
    Job,
    Output,
    WebhookVerificationError,
    verify_webhook,
)
from comfyfleet.client._errors import api_error
from comfyfleet.client._sse import SseMessage, SseParser
from comfyfleet.client._workflow import job_body, resolve
from comfyfleet.webhooks import generate_secret, signed_headers

GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


# --- SSE ----------------------------------------------------------------------------------


def test_sse_messages_end_at_blank_lines_and_keep_their_ids() -> None:
    parser = SseParser()
    lines = [": keep-alive", "", "id: 3", "event: progress", 'data: {"a":', "data: 1}", ""]
    lines += ["event: status", "data:x", "", "retry: 500", "id", "data: y", ""]
    messages = [m for m in map(parser.feed, lines) if m is not None]
    assert messages == [
        SseMessage("progress", '{"a":\n1}', "3"),
        SseMessage("status", "x", "3"),  # the last id holds until another is sent
        SseMessage("message", "y", None),  # an empty id resets it
    ]
    assert parser.retry_ms == 500


# --- workflow inputs ----------------------------------------------------------------------


def test_a_graph_is_copied_so_params_never_change_the_callers_dict(tmp_path: Path) -> None:
    target = resolve(GRAPH)
    body = job_body(target, {"1.width": 64}, {"priority": 2, "webhook": "https://h/x"})
    assert body["workflow"]["1"]["inputs"]["width"] == 64
    assert GRAPH["1"]["inputs"]["width"] == 32
    assert body["priority"] == 2 and body["webhook"] == {"url": "https://h/x"}
    assert job_body(resolve(GRAPH), {}, {"job_id": "mine-1"})["id"] == "mine-1"


def test_strings_are_template_names_unless_they_name_a_json_file(tmp_path: Path) -> None:
    assert resolve("txt2img-sd15").template == "txt2img-sd15"
    file = tmp_path / "flow.json"
    file.write_text(json.dumps(GRAPH), encoding="utf-8")
    assert resolve(str(file)).graph == GRAPH
    assert resolve(file).graph == GRAPH
    bare = tmp_path / "flow"
    bare.write_text(json.dumps(GRAPH), encoding="utf-8")
    assert resolve(str(bare)).graph == GRAPH  # an existing file, whatever its name
    with pytest.raises(ComfyfleetClientError, match=r"cannot read workflow file .*missing\.json"):
        resolve(str(tmp_path / "missing.json"))
    file.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ComfyfleetClientError, match="holds a JSON list, not a graph object"):
        resolve(file)


def test_graph_params_name_existing_nodes_and_unknown_options_are_refused() -> None:
    with pytest.raises(ComfyfleetClientError, match="no node '9' \\(its nodes: 1, 2\\)"):
        job_body(resolve(GRAPH), {"9.width": 1}, {})
    with pytest.raises(ComfyfleetClientError, match="'width' is not"):
        job_body(resolve(GRAPH), {"width": 1}, {})
    with pytest.raises(TypeError, match="unknown job options: prio"):
        job_body(resolve(GRAPH), {}, {"prio": 1})  # type: ignore[typeddict-unknown-key]


# --- errors -------------------------------------------------------------------------------


def test_api_errors_carry_the_servers_code_details_and_node() -> None:
    body = {
        "error": {
            "code": "invalid_workflow",
            "message": "node 7: unknown node type 'Foo'",
            "details": {"node_id": "7", "input": None},
        }
    }
    error = api_error(400, json.dumps(body).encode())
    assert (error.status, error.code, error.node_id) == (400, "invalid_workflow", "7")
    assert str(error) == "HTTP 400 invalid_workflow: node 7: unknown node type 'Foo'"
    plain = api_error(502, b"<html>Bad Gateway</html>")
    assert (plain.code, plain.message) == (
        "http_502",
        "the server answered 502: <html>Bad Gateway</html>",
    )
    assert isinstance(plain, ComfyfleetClientError)


# --- outputs ------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_outputs_save_inside_the_folder_whatever_path_the_server_sent(tmp_path: Path) -> None:
    data = _png(3, 2)
    for path, expected in [
        ("sub/a.png", tmp_path / "sub" / "a.png"),
        ("../../etc/a.png", tmp_path / "a.png"),
        ("/abs/b.png", tmp_path / "abs" / "b.png"),
    ]:
        output = Output(node="3", kind="images", name="a.png", path=path, data=data)
        assert output.save(tmp_path) == expected
        assert expected.read_bytes() == data
    assert Output(node="3", kind="images", data=data).image().size == (3, 2)
    with pytest.raises(ComfyfleetClientError, match="was not downloaded"):
        Output(node="3", kind="images", name="x.png").bytes()
    assert Output(node="4", kind="text", text="hi").bytes() == b"hi"


def test_without_pillow_image_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(1, 1)
    output = Output(node="3", kind="images", name="a.png", data=data)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ComfyfleetClientError, match="needs Pillow: pip install Pillow"):
        output.image()
    assert output.bytes() == data


# --- webhooks -----------------------------------------------------------------------------


def test_the_webhook_check_accepts_what_the_server_signs_and_nothing_else() -> None:
    secret = generate_secret()
    body = json.dumps({"type": "job.succeeded", "timestamp": "t", "data": {"id": "j1"}})
    headers = {k.title(): v for k, v in signed_headers(secret, "msg_1", body).items()}
    event = verify_webhook(secret, headers, body.encode())
    assert (event.id, event.type, event.data) == ("msg_1", "job.succeeded", {"id": "j1"})
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(secret, headers, body.replace("j1", "j2"))
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(generate_secret(), headers, body)
    stamp = int(time.time())
    old = signed_headers(secret, "msg_1", body, timestamp=stamp - 600)
    with pytest.raises(WebhookVerificationError, match="600 s old"):
        verify_webhook(secret, old, body, now=stamp)
    with pytest.raises(WebhookVerificationError, match="missing: webhook-signature"):
        verify_webhook(secret, {"webhook-id": "m", "webhook-timestamp": "1"}, body)


def test_a_plain_passphrase_secret_and_rotated_signatures_verify() -> None:
    body = b'{"type": "job.failed", "data": {}}'
    current = signed_headers("a passphrase", "m2", body)
    previous = signed_headers(
        "the old one", "m2", body, timestamp=int(current["webhook-timestamp"])
    )
    both = {
        **current,
        "webhook-signature": f"{previous['webhook-signature']} {current['webhook-signature']}",
    }
    assert verify_webhook("a passphrase", both, body).type == "job.failed"
    broken = base64.b64encode(b"x").decode()
    with pytest.raises(ComfyfleetClientError, match="not base64"):
        verify_webhook("whsec_" + broken + "%", current, body)


# --- where the API key goes -----------------------------------------------------------------


def test_the_api_key_goes_to_the_server_and_never_to_another_host() -> None:
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        return httpx.Response(200, content=b"bytes")

    with Client("http://fleet:8080", api_key="k1", transport=httpx.MockTransport(answer)) as c:
        c.download("/v1/outputs/j1/a.png")
        c.download("http://fleet:8080/v1/outputs/j1/b.png")
        c.download("https://bucket.s3.example/j1/a.png?X-Amz-Signature=abc")
    assert seen == [
        ("fleet", "Bearer k1"),
        ("fleet", "Bearer k1"),
        ("bucket.s3.example", None),
    ]


def test_an_error_answer_from_either_surface_is_the_same_api_error() -> None:
    body = {"error": {"code": "job_not_found", "message": "no job 'x'", "details": {"id": "x"}}}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=body)

    with Client("http://fleet", transport=httpx.MockTransport(answer)) as sync_client:
        with pytest.raises(ApiError) as sync_error:
            sync_client.job("x").status()

    async def read() -> None:
        async with AsyncClient("http://fleet", transport=httpx.MockTransport(answer)) as c:
            await c.job("x").status()

    with pytest.raises(ApiError) as async_error:
        asyncio.run(read())
    for error in (sync_error.value, async_error.value):
        assert (error.status, error.code, error.details) == (404, "job_not_found", {"id": "x"})


def test_a_bad_server_url_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="http\\(s\\)://host"):
        Client("localhost:8080")


# --- one surface, two ways ------------------------------------------------------------------


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(("sync", "aio"), [(Client, AsyncClient), (Job, AsyncJob)])
def test_the_async_surface_has_the_sync_ones_methods_and_arguments(sync: type, aio: type) -> None:
    ours, theirs = _public(sync), _public(aio)
    assert ours.keys() == theirs.keys()
    for name, signature in ours.items():
        assert list(signature.parameters) == list(theirs[name].parameters), name


def test_the_client_imports_only_the_standard_library_httpx_and_itself() -> None:
    allowed = {"httpx", "PIL", "comfyfleet"}
    folder = Path(client_package.__file__).parent
    for file in folder.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, (file.name, name)
                if top == "comfyfleet":
                    assert name.startswith("comfyfleet.client"), (file.name, name)


def test_importing_the_client_loads_nothing_else_of_comfyfleet() -> None:
    import subprocess

    code = (
        "import sys, comfyfleet.client; "
        "print(sorted(m for m in sys.modules if m.startswith('comfyfleet') "
        "and not m.startswith('comfyfleet.client')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['comfyfleet', 'comfyfleet.errors']"


# --- the drivers over httpx -------------------------------------------------------------------

_EVENTS = [
    f"id: {seq}\nevent: status\ndata: {json.dumps(body)}\n\n".encode()
    for seq, body in [
        (1, {"job_id": "j1", "seq": 1, "event": "status", "data": {"status": "running"}}),
        (2, {"job_id": "j1", "seq": 2, "event": "status", "data": {"status": "succeeded"}}),
    ]
]


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether the client closed it."""

    closed = 0

    def __iter__(self) -> Iterator[bytes]:
        yield from _EVENTS

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in _EVENTS:
            yield chunk

    def close(self) -> None:
        _Body.closed += 1

    async def aclose(self) -> None:
        _Body.closed += 1


def _answer(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/events"):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Body())
    return httpx.Response(200, json={"id": "j1", "status": "running"})


def _refuse(event: Any) -> None:
    raise LookupError(f"callback refused {event.type}")


def test_a_callback_that_raises_ends_the_wait_and_closes_the_stream_in_both_surfaces() -> None:
    _Body.closed = 0
    with Client("http://fleet", transport=httpx.MockTransport(_answer)) as sync_client:
        assert [e.data["status"] for e in sync_client.job("j1").events()] == [
            "running",
            "succeeded",
        ]
        with pytest.raises(LookupError, match="callback refused status"):
            sync_client.job("j1").wait(on_progress=_refuse)

    assert _Body.closed == 2

    async def both() -> list[str]:
        async with AsyncClient("http://fleet", transport=httpx.MockTransport(_answer)) as c:
            seen = [e.data["status"] async for e in c.job("j1").events()]
            with pytest.raises(LookupError, match="callback refused status"):
                await c.job("j1").wait(on_progress=_refuse)
            assert _Body.closed == 4  # at once, not when the loop collects its generators
            return seen

    assert asyncio.run(both()) == ["running", "succeeded"]
