"""The ComfyUI API's pieces on their own: ComfyUI's validation, and the socket hub's fan-out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from comfyfleet.facades.comfyui import PromptInvalid, SocketHub, validate_prompt
from comfyfleet.gateway import Caller, PreviewHub
from comfyfleet.jobs import JobOptions, MemoryJobStore, NewJob

INFO: dict[str, Any] = {
    "EmptyImage": {
        "input": {
            "required": {
                "width": ["INT", {"default": 512, "min": 1, "max": 16384}],
                "height": ["INT", {"default": 512, "min": 1, "max": 16384}],
            }
        },
        "output": ["IMAGE"],
        "output_node": False,
    },
    "KSamplerLike": {
        "input": {"required": {"sampler": [["euler", "dpmpp_2m"], {}], "model": ["MODEL", {}]}},
        "output": ["LATENT"],
        "output_node": False,
    },
    "LoadImage": {
        "input": {"required": {"image": [["a.png"], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "output_node": False,
    },
    "SaveImage": {
        "input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {}]}},
        "output": [],
        "output_node": True,
    },
}


def _save(source: list[Any]) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": "x"}}


def _refusal(prompt: Any) -> PromptInvalid:
    with pytest.raises(PromptInvalid) as caught:
        validate_prompt(prompt, INFO)
    return caught.value


def test_a_valid_prompt_passes_and_uploaded_files_are_not_checked_against_old_lists() -> None:
    validate_prompt(
        {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": "8"}},
            "2": _save(["1", 0]),
            "3": {"class_type": "LoadImage", "inputs": {"image": "comfyfleet-assets/new.png"}},
            "4": _save(["3", 0]),
        },
        INFO,
    )


def test_unknown_classes_and_missing_outputs_are_refused_as_comfyui_does() -> None:
    unknown = _refusal({"1": {"class_type": "Nope", "inputs": {}}})
    assert unknown.error["type"] == "invalid_prompt"
    assert unknown.error["details"] == "Node ID '#1'"
    assert unknown.node_errors == []
    alone = _refusal({"1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1}}})
    assert alone.error["type"] == "prompt_no_outputs"
    assert _refusal({}).error["type"] == "no_prompt"


def test_input_errors_are_listed_per_node_with_their_dependent_outputs() -> None:
    refusal = _refusal(
        {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": "tall"}},
            "2": _save(["1", 0]),
            "3": _save(["9", 0]),
            "4": {"class_type": "KSamplerLike", "inputs": {"sampler": "ddim", "model": ["1", 0]}},
            "5": _save(["4", 0]),
        }
    )
    assert refusal.error["type"] == "prompt_outputs_failed_validation"
    errors = refusal.node_errors
    assert isinstance(errors, dict)
    first = {e["type"] for e in errors["1"]["errors"]}
    assert first == {"value_smaller_than_min", "invalid_input_type"}
    assert errors["1"]["dependent_outputs"] == ["2", "5"]
    assert errors["1"]["class_type"] == "EmptyImage"
    assert [e["type"] for e in errors["3"]["errors"]] == ["bad_linked_input"]
    kinds = [e["type"] for e in errors["4"]["errors"]]
    assert kinds == ["value_not_in_list", "return_type_mismatch"]
    assert [e["type"] for e in errors["5"]["errors"]] == ["return_type_mismatch"]


def test_a_required_input_left_out_is_named() -> None:
    refusal = _refusal(
        {"1": {"class_type": "EmptyImage", "inputs": {"width": 4}}, "2": _save(["1", 0])}
    )
    assert isinstance(refusal.node_errors, dict)
    (error,) = refusal.node_errors["1"]["errors"]
    assert error["type"] == "required_input_missing"
    assert error["extra_info"] == {"input_name": "height"}


def _messages(raw: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in raw if isinstance(m, str)]


def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_their_messages() -> None:
    async def scenario() -> None:
        store = MemoryJobStore()
        hub = SocketHub(store, PreviewHub(), max_buffer=8, poll_s=0.05)
        await hub.start()
        try:
            slow = hub.connect("slow", Caller(None))
            fast = hub.connect("fast", Caller(None))
            received: list[str | bytes] = []

            async def reader() -> None:
                while True:
                    received.append(await fast.outbox.get())

            reading = asyncio.create_task(reader())
            for n in range(6):
                options = JobOptions(comfyui={"client_id": None, "number": n})
                await store.enqueue(NewJob(id=f"job-{n}", workflow={}, options=options))
                job = await store.claim("w", lease_s=30)
                assert job is not None
                await store.publish(job.id, "started", {})
                await store.publish(job.id, "executing", {"node": "1"})
                await store.complete(job.id, "w", outputs=[])
            await asyncio.sleep(0.3)
            reading.cancel()
            assert slow.dropped.is_set()
            assert not fast.dropped.is_set()
            kinds = [m["type"] for m in _messages(received) if m["data"].get("prompt_id")]
            assert kinds.count("execution_success") == 6
            assert kinds.count("execution_start") == 6
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_a_prompt_reaches_only_the_socket_of_its_client_id() -> None:
    async def scenario() -> None:
        store = MemoryJobStore()
        hub = SocketHub(store, PreviewHub(), poll_s=0.05)
        await hub.start()
        try:
            mine = hub.connect("mine", Caller(None))
            other = hub.connect("other", Caller(None))
            options = JobOptions(comfyui={"client_id": "mine", "number": None})
            await store.enqueue(NewJob(id="p1", workflow={}, options=options))
            job = await store.claim("w", lease_s=30)
            assert job is not None
            await store.publish("p1", "progress", {"node": "3", "value": 2, "max": 4})
            await store.complete("p1", "w", outputs=[])
            await asyncio.sleep(0.3)
            got = _messages([mine.outbox.get_nowait() for _ in range(mine.outbox.qsize())])
            heard = _messages([other.outbox.get_nowait() for _ in range(other.outbox.qsize())])
        finally:
            await hub.stop()
        prompt = [m for m in got if m["data"].get("prompt_id") == "p1"]
        assert [m["type"] for m in prompt] == [
            "progress",
            "progress_state",
            "execution_success",
            "executing",
        ]
        assert prompt[0]["data"] == {"value": 2, "max": 4, "prompt_id": "p1", "node": "3"}
        assert all(m["type"] == "status" for m in heard)

    asyncio.run(scenario())


def test_preview_frames_are_framed_as_comfyui_sends_them() -> None:
    from comfyfleet.facades.comfyui._messages import preview_frame

    legacy = preview_frame("jpeg", b"JPEGDATA", prompt_id="p", node="5", metadata=False)
    assert legacy == b"\x00\x00\x00\x01\x00\x00\x00\x01JPEGDATA"
    assert preview_frame("webp", b"x", prompt_id="p", node="5", metadata=False) is None
    framed = preview_frame("png", b"PNG", prompt_id="p", node="5", metadata=True)
    assert framed is not None and framed[:4] == b"\x00\x00\x00\x04"
    size = int.from_bytes(framed[4:8], "big")
    header = json.loads(framed[8 : 8 + size])
    assert header["prompt_id"] == "p" and header["node_id"] == "5"
    assert header["image_type"] == "image/png"
    assert framed[8 + size :] == b"PNG"
