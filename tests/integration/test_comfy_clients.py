"""Third-party ComfyUI client libraries from the package index, used unchanged and as their
READMEs tell a user to: each submits a graph, waits its own way (a WebSocket or polling
`/history`), fetches the output through `/view`, and where it can, uploads an image for a
`LoadImage` graph first.

Every test runs against two targets: `bare`, a real ComfyUI started by this module (proof that
the test itself is right), and `fleet`, the gateway of `comfyfleet serve` with two instances,
which must answer the ComfyUI API exactly as ComfyUI does.

| library (import)                         | transport                                       |
| ---------------------------------------- | ----------------------------------------------- |
| comfy-toolkit (`comfy_toolkit`)          | websocket-client, opened before POST /prompt;   |
|                                          | and urllib polling of /history/{id}             |
| comfy-api-simplified (`comfy_api_...`)   | `websockets` (asyncio) opened after the POST,   |
|                                          | requests for HTTP; uploads                      |
| comfyui-workflow-client (`comfyuiclient`)| aiohttp WebSocket (async client); requests      |
|                                          | polling /history/{id} (sync client); uploads    |
| comfyapi (`comfyapi`)                    | requests polling /history/{id}                  |
| comfyui-utils (`comfyui_utils`)          | aiohttp WebSocket after the POST, /queue and    |
|                                          | the whole /history on each `status`             |
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from comfy_toolkit import ComfyClient as ToolkitClient
from comfyapi import ComfyAPIManager
from comfyui_utils import comfy as comfyui_utils
from comfyuiclient import ComfyUIClient, ComfyUIClientAsync

from tests.comfyui_env import workspace_sharing
from tests.integration.comfy_clients import (
    UPLOAD_SIZE,
    Target,
    bare_comfy,
    fresh_seed,
    load_image_workflow,
    model_free_workflow,
    occupy,
    sample_image,
    write_workflow,
)
from tests.integration.serve import Server, png_size, serve_config

pytestmark = pytest.mark.comfyui

T = TypeVar("T")

LIMIT_S = 90.0
"""How long one client call may take before the test fails instead of hanging (a client that
waits for a message that never comes would otherwise wait forever)."""

BUSY_S = 1.0
"""How long `occupy` keeps the ComfyUIs busy before a client's prompt can run."""


@pytest.fixture(scope="module", params=["bare", "fleet"])
def target(
    request: pytest.FixtureRequest,
    comfyui_install: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    if request.param == "bare":
        with bare_comfy(comfyui_install, tmp_path_factory.mktemp("bare-comfyui")) as comfy:
            yield Target("bare", comfy.url, instances=1)
        return
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("fleet"))
    serve_config(ws)
    server = Server(ws, instances=2).start()
    try:
        yield Target("fleet", server.url, instances=2)
    finally:
        server.close()


def within(fn: Callable[[], T], limit: float = LIMIT_S) -> T:
    """`fn()` on a daemon thread, failing the test if it has not returned in `limit` seconds."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise AssertionError(f"the client did not return in {limit:.0f}s")
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def run_async(coro: Coroutine[Any, Any, T], limit: float = LIMIT_S) -> T:
    return asyncio.run(asyncio.wait_for(coro, limit))


# --- comfy-toolkit: websocket-client, and polling /history ------------------------------------


def test_comfy_toolkit_tracks_a_prompt_over_its_websocket(target: Target) -> None:
    client = ToolkitClient(target.url)
    assert client.is_online()
    workflow = model_free_workflow(fresh_seed(), "toolkit-ws")
    result = client.submit_and_track(workflow, overall_timeout=LIMIT_S, history_retries=10)
    assert result["status"] == "completed"
    [image] = result["images"]
    assert image["type"] == "output" and image["node_id"] == "3"
    assert png_size(client.download(image)) == (32, 32)


def test_comfy_toolkit_polls_history(target: Target) -> None:
    client = ToolkitClient(target.url)
    prompt_id = client.submit(model_free_workflow(fresh_seed(), "toolkit-poll"))
    [image] = client.wait_for_images(prompt_id, max_wait=LIMIT_S, poll_interval=0.2)
    assert png_size(client.download(image)) == (32, 32)
    assert client.queue_status() == {"running": 0, "pending": 0}


# --- comfy-api-simplified: `websockets` after the POST, requests; uploads ---------------------


def test_comfy_api_simplified_queues_and_waits_for_images(target: Target) -> None:
    api = ComfyApiWrapper(target.url)
    seed = fresh_seed()
    workflow = ComfyWorkflowWrapper(model_free_workflow(0, "simplified"))
    workflow.set_node_param("Empty Image", "color", seed)
    results = within(lambda: api.queue_and_wait_images(workflow, "Save Image"))
    [(filename, data)] = results.items()
    assert filename.startswith("simplified_") and filename.endswith(".png")
    assert png_size(data) == (32, 32)


def test_comfy_api_simplified_uploads_an_image_for_load_image(
    target: Target, tmp_path: Path
) -> None:
    api = ComfyApiWrapper(target.url)
    seed = fresh_seed()
    source = tmp_path / f"simplified-in-{seed}.png"
    sample_image(seed).save(source)
    uploaded = api.upload_image(source)
    assert uploaded["type"] == "input"
    if target.name == "bare":
        assert uploaded["name"] == source.name
    else:  # the fleet names uploads by their content: nobody overwrites anybody's file
        assert uploaded["subfolder"] == "comfyfleet-assets"
        assert uploaded["name"] == hashlib.sha256(source.read_bytes()).hexdigest() + ".png"
    workflow = ComfyWorkflowWrapper(load_image_workflow("example.png", "simplified-upload"))
    workflow.set_node_param("Load Image", "image", f"{uploaded['subfolder']}/{uploaded['name']}")
    results = within(lambda: api.queue_and_wait_images(workflow, "Save Image"))
    [data] = results.values()
    assert png_size(data) == UPLOAD_SIZE


def test_comfy_api_simplified_waits_behind_a_busy_queue(target: Target) -> None:
    """Its prompt still queued when its WebSocket connects: the `status` sent on connect counts
    it (queue_remaining > 0), so the client reads messages until a `status` with
    queue_remaining 0 (ComfyUI 0.3.75 broadcasts one right after `execution_success`, before
    `executing` with `node: null`) or `executing` with `node: null` and its prompt_id, whichever
    comes first, then reads /history/{id}."""
    api = ComfyApiWrapper(target.url)
    occupy(target, BUSY_S)
    started = time.monotonic()
    results = within(
        lambda: api.queue_and_wait_images(
            ComfyWorkflowWrapper(model_free_workflow(fresh_seed(), "simplified-busy")),
            "Save Image",
        )
    )
    assert time.monotonic() - started > BUSY_S / 2, "the prompt did not wait behind the others"
    [data] = results.values()
    assert png_size(data) == (32, 32)


def test_comfy_api_simplified_reads_the_server(target: Target) -> None:
    api = ComfyApiWrapper(target.url)
    stats = api.get_system_stats()
    assert {"system", "devices"} <= stats.keys()
    info = api.get_object_info("ImageInvert")
    assert info["ImageInvert"]["output"] == ["IMAGE"]
    assert "SaveImage" in api.get_object_info()
    queue = api.get_queue()
    assert queue == {"queue_running": [], "queue_pending": []}
    with pytest.raises(ValueError, match="not in the queue"):
        api.get_queue_size_before("no-such-prompt")
    assert isinstance(api.get_embeddings(), list)
    api.interrupt()  # nothing runs: still a 200


# --- comfyui-workflow-client: requests polling (sync) and aiohttp WebSocket (async); uploads --


def _workflow_client_generate(client: ComfyUIClient) -> Any:
    client.connect()
    try:
        return client.generate(["Save Image"])["Save Image"]
    finally:
        client.close()


def test_comfyuiclient_sync_polls_history(target: Target, tmp_path: Path) -> None:
    path = write_workflow(tmp_path / "workflow_api.json", model_free_workflow(0, "wfc-sync"))
    client = ComfyUIClient(target.address, str(path))
    client.set_data(key="Empty Image", input_key="color", input_value=fresh_seed())
    image = within(lambda: _workflow_client_generate(client))
    assert image.format == "PNG" and image.size == (32, 32)


def test_comfyuiclient_sync_uploads_an_image(target: Target, tmp_path: Path) -> None:
    path = write_workflow(
        tmp_path / "workflow_api.json", load_image_workflow("example.png", "wfc-sync-upload")
    )
    client = ComfyUIClient(target.address, str(path))
    client.connect()  # set_data uploads through the client's session
    client.set_data(key="Load Image", image=sample_image(fresh_seed()))
    expected = "temp/temp" if target.name == "bare" else "comfyfleet-assets/"
    assert client.comfyui_prompt["1"]["inputs"]["image"].startswith(expected)
    image = within(lambda: _workflow_client_generate(client))
    assert image.format == "PNG" and image.size == UPLOAD_SIZE


async def _workflow_client_generate_async(client: ComfyUIClientAsync, upload: Any) -> Any:
    await client.connect()
    try:
        if upload is not None:
            await client.set_data(key="Load Image", image=upload)
        return (await client.generate(["Save Image"]))["Save Image"]
    finally:
        await client.close()


def test_comfyuiclient_async_waits_on_its_websocket(target: Target, tmp_path: Path) -> None:
    path = write_workflow(tmp_path / "workflow_api.json", model_free_workflow(0, "wfc-async"))
    client = ComfyUIClientAsync(target.address, str(path))
    client.comfyui_prompt["1"]["inputs"]["color"] = fresh_seed()
    image = run_async(_workflow_client_generate_async(client, None))
    assert image.format == "PNG" and image.size == (32, 32)


def test_comfyuiclient_async_uploads_an_image(target: Target, tmp_path: Path) -> None:
    path = write_workflow(
        tmp_path / "workflow_api.json", load_image_workflow("example.png", "wfc-async-upload")
    )
    client = ComfyUIClientAsync(target.address, str(path))
    image = run_async(_workflow_client_generate_async(client, sample_image(fresh_seed())))
    assert image.format == "PNG" and image.size == UPLOAD_SIZE


# --- comfyapi: requests polling /history/{id} -------------------------------------------------


def test_comfyapi_polls_history_and_downloads(target: Target, tmp_path: Path) -> None:
    manager = ComfyAPIManager()
    manager.set_base_url(target.url)
    manager.load_workflow(write_workflow(tmp_path / "wf.json", model_free_workflow(0, "capi")))
    manager.edit_workflow(["1", "inputs", "color"], fresh_seed())
    prompt_id = manager.submit_workflow()
    deadline = time.monotonic() + LIMIT_S
    while not manager.check_queue(prompt_id):
        assert time.monotonic() < deadline, f"{prompt_id} not finished in {LIMIT_S:.0f}s"
        time.sleep(0.2)
    url, filename = manager.find_output(prompt_id, with_filename=True)
    assert filename.startswith("capi_")
    saved = manager.download_output(url, save_path=str(tmp_path / "out"), filename=filename)
    assert png_size(Path(saved).read_bytes()) == (32, 32)


# --- comfyui-utils: aiohttp WebSocket after the POST, /queue and /history ---------------------


class _Recorder(comfyui_utils.Callbacks):
    def __init__(self) -> None:
        self.positions: list[Any] = []
        self.outputs: dict[str, Any] | None = None
        self.cached: bool | None = None

    async def queue_position(self, position: Any) -> None:
        self.positions.append(position)

    async def in_progress(self, node_id: int, progress: int, total: int) -> None:
        return None

    async def completed(self, outputs: dict[str, Any], cached: bool) -> None:
        self.outputs, self.cached = outputs, cached


async def _comfyui_utils_run(address: str, prompt: dict[str, Any]) -> tuple[_Recorder, bytes]:
    comfyui = comfyui_utils.ComfyAPI(address)
    recorder = _Recorder()
    await comfyui.submit(prompt, recorder)
    assert recorder.outputs is not None, "the prompt never completed"
    fetched: list[bytes] = []

    async def on_load(data_file: Any) -> None:
        fetched.append(data_file.getvalue())

    await comfyui.fetch(recorder.outputs["images"][0], on_load)
    return recorder, fetched[0]


def test_comfyui_utils_submits_and_fetches(target: Target) -> None:
    """A prompt that is done before the WebSocket connects: on the `status` sent on connect the
    client finds it in neither /queue list and looks it up in the whole /history by comparing
    each entry's `prompt[2]` with the graph it sent ("cached")."""
    prompt = model_free_workflow(fresh_seed(), "cutils")
    recorder, data = run_async(_comfyui_utils_run(target.address, prompt))
    assert recorder.outputs is not None
    [image] = recorder.outputs["images"]
    assert image["type"] == "output" and image["filename"].startswith("cutils_")
    assert png_size(data) == (32, 32)


def test_comfyui_utils_waits_behind_a_busy_queue(target: Target) -> None:
    """A prompt still queued when the WebSocket connects: the client finds it in /queue (its
    position). It completes on the `executed` message of its SaveImage node, or, where the
    prompt ran while the client was reading /queue after a later `status`, from /history as
    in the test above (which of the two is a race inside the client)."""
    occupy(target, BUSY_S)
    prompt = model_free_workflow(fresh_seed(), "cutils-busy")
    recorder, data = run_async(_comfyui_utils_run(target.address, prompt))
    assert recorder.positions and recorder.positions[0] >= 1, recorder.positions
    assert recorder.outputs is not None
    [image] = recorder.outputs["images"]
    assert image["filename"].startswith("cutils-busy_")
    assert png_size(data) == (32, 32)
