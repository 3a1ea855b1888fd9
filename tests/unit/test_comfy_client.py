"""ComfyClient against canned ComfyUI answers (httpx.MockTransport; the shapes follow ComfyUI)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from comfyfleet.comfy import (
    ComfyClient,
    ComfyError,
    ComfyProtocolError,
    ComfyUnavailable,
    OutputFile,
    PromptFailed,
    PromptRejected,
    PromptResult,
    PromptTimeout,
    sample_graph,
)
from comfyfleet.errors import ComfyfleetError

pytestmark = pytest.mark.anyio

BASE = "http://comfy.test:8188"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(handler: Handler) -> ComfyClient:
    return ComfyClient(BASE, transport=httpx.MockTransport(handler))


class Recorder:
    """Answers every request with one response and remembers what was asked."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response

    def body(self, index: int = 0) -> Any:
        return json.loads(self.requests[index].content)


def history_entry(status: str, outputs: dict[str, Any], messages: list[Any]) -> dict[str, Any]:
    return {
        "prompt": [0, "p1", {}, {}, ["3"]],
        "outputs": outputs,
        "status": {"status_str": status, "completed": status == "success", "messages": messages},
        "meta": {},
    }


# -- reading state ---------------------------------------------------------------------------


async def test_system_stats_and_version() -> None:
    stats = {"system": {"comfyui_version": "0.3.75", "os": "posix"}, "devices": []}
    rec = Recorder(httpx.Response(200, json=stats))
    async with client(rec) as c:
        assert await c.system_stats() == stats
        assert await c.comfyui_version() == "0.3.75"
    assert [r.url.path for r in rec.requests] == ["/system_stats", "/system_stats"]


async def test_version_missing_is_none() -> None:
    async with client(Recorder(httpx.Response(200, json={"system": {}}))) as c:
        assert await c.comfyui_version() is None


async def test_queue_remaining() -> None:
    rec = Recorder(httpx.Response(200, json={"exec_info": {"queue_remaining": 3}}))
    async with client(rec) as c:
        assert await c.queue_remaining() == 3
    assert rec.requests[0].method == "GET"
    assert rec.requests[0].url.path == "/prompt"


async def test_queue_remaining_missing_is_protocol_error() -> None:
    async with client(Recorder(httpx.Response(200, json={"exec_info": {}}))) as c:
        with pytest.raises(ComfyProtocolError, match="queue_remaining"):
            await c.queue_remaining()


async def test_object_info() -> None:
    info = {"EmptyImage": {"input": {"required": {}}, "output": ["IMAGE"]}}
    rec = Recorder(httpx.Response(200, json=info))
    async with client(rec) as c:
        assert await c.object_info() == info
    assert rec.requests[0].url.path == "/object_info"


async def test_history_empty_means_none() -> None:
    rec = Recorder(httpx.Response(200, json={}))
    async with client(rec) as c:
        assert await c.history("abc") is None
    assert rec.requests[0].url.path == "/history/abc"


async def test_history_returns_the_entry() -> None:
    entry = history_entry("success", {}, [])
    async with client(Recorder(httpx.Response(200, json={"abc": entry}))) as c:
        assert await c.history("abc") == entry


# -- submit ----------------------------------------------------------------------------------


async def test_submit_posts_prompt_and_ids() -> None:
    rec = Recorder(httpx.Response(200, json={"prompt_id": "p1", "number": 0, "node_errors": {}}))
    graph = sample_graph(prefix="t", seed=5)
    async with client(rec) as c:
        assert await c.submit(graph, client_id="c1", prompt_id="p1") == "p1"
    assert rec.requests[0].method == "POST"
    assert rec.requests[0].url.path == "/prompt"
    assert rec.body() == {"prompt": graph, "client_id": "c1", "prompt_id": "p1"}


async def test_submit_omits_unset_ids() -> None:
    rec = Recorder(httpx.Response(200, json={"prompt_id": "generated"}))
    async with client(rec) as c:
        assert await c.submit({"1": {}}) == "generated"
    assert rec.body() == {"prompt": {"1": {}}}


async def test_submit_rejected_names_first_failing_node() -> None:
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "Required input is missing: text",
            "extra_info": {},
        },
        "node_errors": {
            "6": {
                "class_type": "CLIPTextEncode",
                "dependent_outputs": ["9"],
                "errors": [
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": "text",
                        "extra_info": {"input_name": "text"},
                    },
                    {
                        "type": "value_smaller_than_min",
                        "message": "Value -1 smaller than min of 0",
                        "details": "strength",
                        "extra_info": {"input_name": "strength"},
                    },
                ],
            }
        },
    }
    async with client(Recorder(httpx.Response(400, json=body))) as c:
        with pytest.raises(PromptRejected) as caught:
            await c.submit({"6": {"class_type": "CLIPTextEncode", "inputs": {}}})
    err = caught.value
    assert "node 6 (CLIPTextEncode): input 'text' missing" in str(err)
    assert "1 more" in str(err)
    assert json.loads(err.body) == body
    assert [(e.node_id, e.input_name, e.type) for e in err.node_errors] == [
        ("6", "text", "required_input_missing"),
        ("6", "strength", "value_smaller_than_min"),
    ]
    assert err.node_errors[1].describe() == (
        "node 6 (CLIPTextEncode): input 'strength': Value -1 smaller than min of 0"
    )
    assert isinstance(err, ComfyError)
    assert isinstance(err, ComfyfleetError)


async def test_value_not_in_list_keeps_details() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
        "node_errors": {
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'x.safetensors' not in []",
                        "extra_info": {"input_name": "ckpt_name"},
                    }
                ],
            }
        },
    }
    async with client(Recorder(httpx.Response(400, json=body))) as c:
        with pytest.raises(PromptRejected) as caught:
            await c.submit({})
    assert caught.value.message == (
        "ComfyUI rejected the prompt: node 4 (CheckpointLoaderSimple): "
        "input 'ckpt_name': Value not in list: 'x.safetensors' not in []"
    )


async def test_submit_rejected_unknown_class_names_node_and_class() -> None:
    body = {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#7'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    graph = {"7": {"class_type": "NoSuchNode", "inputs": {}}}
    async with client(Recorder(httpx.Response(400, json=body))) as c:
        with pytest.raises(PromptRejected) as caught:
            await c.submit(graph)
    err = caught.value
    assert err.message == "ComfyUI rejected the prompt: node 7 (NoSuchNode): unknown node class"
    assert err.hint is not None and "NoSuchNode" in err.hint
    assert err.node_errors == []
    assert err.error["type"] == "invalid_prompt"


async def test_submit_rejected_without_node() -> None:
    body = {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs"}}
    async with client(Recorder(httpx.Response(400, json=body))) as c:
        with pytest.raises(PromptRejected, match="Prompt has no outputs"):
            await c.submit({})


async def test_submit_400_not_json_is_protocol_error() -> None:
    async with client(Recorder(httpx.Response(400, text="<html>bad</html>"))) as c:
        with pytest.raises(ComfyProtocolError) as caught:
            await c.submit({})
    assert caught.value.status == 400
    assert "bad" in caught.value.body_excerpt


async def test_submit_answer_without_prompt_id() -> None:
    async with client(Recorder(httpx.Response(200, json={"number": 1}))) as c:
        with pytest.raises(ComfyProtocolError, match="prompt_id"):
            await c.submit({})


# -- wait and results ------------------------------------------------------------------------


async def test_wait_polls_until_history_has_entry() -> None:
    outputs = {"3": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]}}
    answers = [{}, {}, {"p1": history_entry("success", outputs, [["execution_start", {}]])}]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=answers[min(len(seen), len(answers)) - 1])

    async with client(handler) as c:
        result = await c.wait("p1", timeout=5, poll=0)
    assert seen == ["/history/p1"] * 3
    assert result == PromptResult(
        prompt_id="p1",
        status="success",
        outputs=outputs,
        messages=[["execution_start", {}]],
    )
    assert result.files() == [OutputFile("3", "a_00001_.png", "", "output", "images")]


async def test_wait_times_out() -> None:
    async with client(Recorder(httpx.Response(200, json={}))) as c:
        with pytest.raises(PromptTimeout) as caught:
            await c.wait("p1", timeout=0.02, poll=0.005)
    assert caught.value.prompt_id == "p1"


async def test_wait_raises_prompt_failed_from_execution_error() -> None:
    messages = [
        ["execution_start", {"prompt_id": "p1", "timestamp": 1}],
        ["execution_cached", {"nodes": [], "prompt_id": "p1", "timestamp": 2}],
        [
            "execution_error",
            {
                "prompt_id": "p1",
                "node_id": "3",
                "node_type": "FleetFail",
                "executed": [],
                "exception_message": "boom\n",
                "exception_type": "RuntimeError",
                "traceback": ["  File x\n"],
                "current_inputs": {},
                "current_outputs": [],
                "timestamp": 3,
            },
        ],
    ]
    entry = history_entry("error", {}, messages)
    async with client(Recorder(httpx.Response(200, json={"p1": entry}))) as c:
        with pytest.raises(PromptFailed) as caught:
            await c.wait("p1", timeout=1)
    err = caught.value
    assert err.message == "node 3 (FleetFail): RuntimeError: boom"
    assert (err.node_id, err.node_type) == ("3", "FleetFail")
    assert (err.exception_type, err.exception_message) == ("RuntimeError", "boom")
    assert err.traceback == ["  File x\n"]
    assert err.prompt_id == "p1"
    assert not err.interrupted


async def test_wait_interrupted_is_prompt_failed() -> None:
    messages = [["execution_interrupted", {"node_id": "1", "node_type": "FleetSleep"}]]
    entry = history_entry("error", {}, messages)
    async with client(Recorder(httpx.Response(200, json={"p1": entry}))) as c:
        with pytest.raises(PromptFailed) as caught:
            await c.wait("p1", timeout=1)
    assert caught.value.interrupted
    assert caught.value.message == "node 1 (FleetSleep): interrupted"


async def test_wait_error_without_messages() -> None:
    entry = history_entry("error", {}, [])
    async with client(Recorder(httpx.Response(200, json={"p1": entry}))) as c:
        with pytest.raises(PromptFailed, match="no error message"):
            await c.wait("p1", timeout=1)


def test_files_from_images_gifs_and_text() -> None:
    result = PromptResult(
        prompt_id="p",
        status="success",
        outputs={
            "9": {
                "images": [
                    {"filename": "a.png", "subfolder": "run", "type": "output"},
                    {"filename": "b.png", "subfolder": "run", "type": "temp"},
                ]
            },
            "12": {"gifs": [{"filename": "c.mp4", "subfolder": "", "type": "output"}]},
            "13": {"text": ["slept 0.2s"], "animated": [False]},
            "14": {"audio": [{"filename": "d.flac", "type": "output"}], "other": "x"},
        },
        messages=[],
    )
    assert result.files() == [
        OutputFile("9", "a.png", "run", "output", "images"),
        OutputFile("9", "b.png", "run", "temp", "images"),
        OutputFile("12", "c.mp4", "", "output", "gifs"),
        OutputFile("14", "d.flac", "", "output", "audio"),
    ]


# -- control ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt_id", "expected"), [(None, {}), ("p1", {"prompt_id": "p1"})])
async def test_interrupt(prompt_id: str | None, expected: dict[str, str]) -> None:
    rec = Recorder(httpx.Response(200))
    async with client(rec) as c:
        await c.interrupt(prompt_id)
    assert rec.requests[0].url.path == "/interrupt"
    assert rec.body() == expected


async def test_delete_queued() -> None:
    rec = Recorder(httpx.Response(200))
    async with client(rec) as c:
        await c.delete_queued(["a", "b"])
    assert rec.requests[0].url.path == "/queue"
    assert rec.body() == {"delete": ["a", "b"]}


async def test_cancel_uses_the_jobs_api_where_the_instance_has_it() -> None:
    rec = Recorder(httpx.Response(200, json={"cancelled": True}))
    async with client(rec) as c:
        await c.cancel("5d1c0a4e-7f0b-4a57-9d6e-0c6f1b1f7e11")
        await c.cancel("0b7f0c52-3f57-4d8e-b1f4-8a0c3c0e6f21")
    assert [r.url.path for r in rec.requests] == [
        "/api/jobs/5d1c0a4e-7f0b-4a57-9d6e-0c6f1b1f7e11/cancel",
        "/api/jobs/0b7f0c52-3f57-4d8e-b1f4-8a0c3c0e6f21/cancel",
    ]


async def test_cancel_without_a_jobs_api_deletes_and_interrupts_and_asks_once() -> None:
    asked: list[tuple[str, Any]] = []

    def older_comfyui(request: httpx.Request) -> httpx.Response:
        asked.append((request.url.path, json.loads(request.content or b"null")))
        if request.url.path.startswith("/api/jobs/"):
            return httpx.Response(404, text="404: Not Found")
        return httpx.Response(200)

    async with client(older_comfyui) as c:
        await c.cancel("p1")
        await c.cancel("p2")
    assert asked == [
        ("/api/jobs/p1/cancel", {}),
        ("/queue", {"delete": ["p1"]}),
        ("/interrupt", {"prompt_id": "p1"}),
        ("/queue", {"delete": ["p2"]}),
        ("/interrupt", {"prompt_id": "p2"}),
    ]


async def test_cancel_refused_by_the_jobs_api_is_an_error() -> None:
    rec = Recorder(httpx.Response(400, json={"error": "job_id is required"}))
    async with client(rec) as c:
        with pytest.raises(ComfyProtocolError, match="HTTP 400"):
            await c.cancel("p1")


async def test_free() -> None:
    rec = Recorder(httpx.Response(200))
    async with client(rec) as c:
        await c.free()
        await c.free(unload_models=False)
    assert rec.requests[0].url.path == "/free"
    assert rec.body(0) == {"unload_models": True, "free_memory": True}
    assert rec.body(1) == {"unload_models": False, "free_memory": True}


async def test_view_returns_bytes() -> None:
    rec = Recorder(httpx.Response(200, content=b"\x89PNG..."))
    async with client(rec) as c:
        assert await c.view("a b.png", "sub", "output") == b"\x89PNG..."
    url = rec.requests[0].url
    assert url.path == "/view"
    assert dict(url.params) == {"filename": "a b.png", "subfolder": "sub", "type": "output"}


async def test_view_missing_file_is_protocol_error() -> None:
    async with client(Recorder(httpx.Response(404))) as c:
        with pytest.raises(ComfyProtocolError) as caught:
            await c.view("gone.png", "", "output")
    assert caught.value.status == 404
    assert caught.value.message == f"ComfyUI at {BASE}: GET /view failed (HTTP 404)"


# -- failures of the instance itself ---------------------------------------------------------


async def test_connection_refused_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async with client(refuse) as c:
        with pytest.raises(ComfyUnavailable) as caught:
            await c.system_stats()
    assert str(caught.value.message) == (
        f"ComfyUI at {BASE} is not answering: [Errno 111] Connection refused"
    )


async def test_timeout_is_unavailable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("", request=request)

    async with client(slow) as c:
        with pytest.raises(ComfyUnavailable, match="ReadTimeout"):
            await c.submit({})


async def test_server_error_is_protocol_error() -> None:
    rec = Recorder(httpx.Response(500, text="500 Internal Server Error\n\nServer got itself"))
    async with client(rec) as c:
        with pytest.raises(ComfyProtocolError) as caught:
            await c.object_info()
    assert caught.value.status == 500
    assert "Internal Server Error" in caught.value.body_excerpt
    assert "HTTP 500" in caught.value.message


async def test_non_json_is_protocol_error() -> None:
    async with client(Recorder(httpx.Response(200, text="<html>proxy</html>"))) as c:
        with pytest.raises(ComfyProtocolError, match="non-JSON"):
            await c.system_stats()


async def test_json_array_is_protocol_error() -> None:
    async with client(Recorder(httpx.Response(200, json=[1, 2]))) as c:
        with pytest.raises(ComfyProtocolError, match="not an object"):
            await c.history("p1")


async def test_trailing_slash_is_ignored() -> None:
    rec = Recorder(httpx.Response(200, json={}))
    async with ComfyClient(BASE + "/", transport=httpx.MockTransport(rec)) as c:
        assert c.base_url == BASE
        await c.system_stats()
    assert str(rec.requests[0].url) == BASE + "/system_stats"


def test_sample_graph_varies_with_seed_and_prefix() -> None:
    graph = sample_graph(prefix="smoke", seed=0x1000001, size=32)
    assert graph["1"]["inputs"] == {"width": 32, "height": 32, "batch_size": 1, "color": 2}
    assert graph["3"]["inputs"]["filename_prefix"] == "smoke"
    assert graph["3"]["inputs"]["images"] == ["2", 0]
    assert sample_graph(prefix="smoke", seed=1) != sample_graph(prefix="smoke", seed=2)
