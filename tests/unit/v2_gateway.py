"""The gateway with the Comfy API v2 router over an in-memory job store and an asset store in a
test folder: what the v2 unit tests drive."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from comfyfleet.assets import AssetResolver, AssetStore
from comfyfleet.auth import KeyStore
from comfyfleet.facades.comfy_v2 import comfy_v2_router
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.jobs import JobOutput, MemoryJobStore

T = TypeVar("T")
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 64


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _Known:
    async def known(self, wanted: set[str]) -> frozenset[str]:
        return frozenset({"EmptyImage", "SaveImage", "LoadImage"})

    def free_text(self, class_type: str, input_name: str) -> bool:
        return input_name == "text"


class Gateway:
    """The app with the v2 router over a memory store and an asset store in `tmp_path`."""

    def __init__(self, tmp_path: Path, keys: KeyStore | None = None, **settings: Any) -> None:
        self.assets = AssetStore(tmp_path / "input")
        self.service = Service(
            store=MemoryJobStore(),
            output_dir=tmp_path / "out",
            settings=ServeSettings(**settings),
            media=AssetResolver(self.assets),
        )
        self.service.node_types = _Known()  # type: ignore[assignment]
        router = comfy_v2_router(self.service, self.assets)
        self.app = create_app(self.service, routers=(router,), keys=keys)

    def client(self, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers)

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.client() as client:
                return await client.request(method, url, **kwargs)

        return run(go())

    def finish(self, job_id: str, outputs: list[dict[str, Any]]) -> None:
        """Run the job through the store as the dispatcher would, ending it succeeded."""

        async def go() -> None:
            store = self.service.store
            claimed = await store.claim("w1", instance=0, lease_s=30)
            assert claimed is not None and claimed.id == job_id
            await store.complete(job_id, "w1", [JobOutput.from_json(o) for o in outputs])

        run(go())
