"""A lane for an attached server, over the in-memory store and a fake ComfyUI that has folders of
its own: assets are uploaded to it, outputs downloaded from it, and a computed prefix is made
literal when it lacks comfyfleet's runtime extension."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx

from comfyfleet.comfy import ComfyClient
from comfyfleet.jobs import (
    Dispatcher,
    DispatcherSettings,
    JobStatus,
    MemoryJobStore,
    NewJob,
    OutputPublisher,
    RemoteFolders,
)
from comfyfleet.jobs._remote import RemoteServer
from comfyfleet.storage import LocalStorage
from comfyfleet.supervise import InstanceEvent, State
from tests.unit.fake_comfy import FakeComfy

URL = "https://gpu-box.example:8443/comfy"
PNG = b"\x89PNG\r\n\x1a\nfake"


class RemoteComfy(FakeComfy):
    """A fake ComfyUI with its own input folder and `/view`, without the runtime extension."""

    def __init__(self) -> None:
        super().__init__("remote")
        self.uploads: dict[str, bytes] = {}
        self.submitted: list[dict[str, Any]] = []

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/comfy")
        if self.alive and path.startswith("/object_info/"):
            return httpx.Response(200, json={})
        if self.alive and path == "/upload/image":
            form = request.content
            folder = re.search(rb'name="subfolder"\r\n\r\n([^\r]*)', form)
            name = re.search(rb'filename="([^"]+)"', form)
            assert folder is not None and name is not None
            key = (folder.group(1) + b"/" + name.group(1)).decode()
            self.uploads[key] = PNG if PNG in form else b""
            return httpx.Response(200, json={"name": "x", "subfolder": "", "type": "input"})
        if self.alive and path == "/view":
            params = request.url.params
            assert params["type"] == "output" and params["filename"].endswith(".png")
            return httpx.Response(200, content=PNG)
        if self.alive and path == "/prompt" and request.method == "POST":
            self.submitted.append(json.loads(request.content)["prompt"])
        moved = httpx.Request(
            request.method, request.url.copy_with(path=path), content=request.content
        )
        return await super()._handle(moved)


def test_a_job_on_an_attached_server_moves_its_files(tmp_path: Path) -> None:
    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    asset = input_dir / "comfyfleet-assets" / ("a" * 64 + ".png")
    asset.parent.mkdir(parents=True)
    asset.write_bytes(PNG)
    fake = RemoteComfy()

    async def main() -> None:
        store = MemoryJobStore()
        dispatcher = Dispatcher(
            store,
            DispatcherSettings(lease_s=5, poll_s=0.02),
            make_client=fake.client,
            make_events=fake.events,
            worker="w1",
            publisher=OutputPublisher(output_dir, LocalStorage(output_dir)),
            remote=RemoteFolders(input_dir, output_dir),
        )
        fake.start()
        dispatcher.start()
        dispatcher.on_instance_event(
            InstanceEvent(3, State.PROBING, State.READY, port=8443, url=URL)
        )
        assert dispatcher.lanes[3].remote is not None
        workflow = {
            "1": {
                "class_type": "LoadImage",
                "inputs": {"image": f"comfyfleet-assets/{asset.name}"},
            },
            "2": {"class_type": "SomeStringNode", "inputs": {}},
            "9": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": ["2", 0]},
            },
        }
        await store.enqueue(NewJob("j1", workflow))
        dispatcher.notify()
        try:
            async with asyncio.timeout(10):
                while not (await store.get("j1")).terminal:
                    await asyncio.sleep(0.01)
        finally:
            await dispatcher.stop()
            fake.kill()
        job = await store.get("j1")
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.instance == 3
        assert job.outputs[0].key == "j1/9_00001_.png" and job.outputs[0].size == len(PNG)

    asyncio.run(main())
    (graph,) = fake.submitted
    assert graph["9"]["inputs"]["filename_prefix"] == "j1/9"  # no ComfyfleetJobPrefix there
    assert not any(n["class_type"] == "ComfyfleetJobPrefix" for n in graph.values())
    assert fake.uploads == {f"comfyfleet-assets/{asset.name}": PNG}
    assert (output_dir / "j1" / "9_00001_.png").read_bytes() == PNG


def test_the_prefix_node_is_asked_once_and_used_when_there() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"ComfyfleetJobPrefix": {"input": {}}})

    async def main() -> list[dict[str, Any]]:
        client = ComfyClient("http://h:1", transport=httpx.MockTransport(handler))
        server = RemoteServer(RemoteFolders(), client)
        linked = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": ["2", 0]}}}
        graphs = [await server.graph_for(linked, "j") for _ in range(2)]
        await client.aclose()
        return graphs

    graphs = asyncio.run(main())
    assert asked == ["/object_info/ComfyfleetJobPrefix"]
    assert graphs[0]["9"]["inputs"]["filename_prefix"] == ["comfyfleet-prefix-9", 0]


def test_asset_names_that_climb_out_are_not_uploaded() -> None:
    server = RemoteServer(RemoteFolders(), ComfyClient("http://h:1"))
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "comfyfleet-assets/../../etc/x"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "comfyfleet-assets/b.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "other.png"}},
    }
    assert server.asset_inputs(workflow) == ["comfyfleet-assets/b.png"]
