"""The baseline of the overhead benchmarks: the best client of one ComfyUI alone, as a user who
talks to ComfyUI directly would write it (no polling: outputs from its WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

Timed = tuple[float, float, float]
"""(seconds end to end, of that spent uploading to S3, of that spent fetching the file)."""


class Direct:
    """The best client of one ComfyUI: one WebSocket, read by one task that hands each prompt
    its outputs (from `executed`) when `execution_success` arrives; futures are registered
    before the submit, so a prompt that ends before POST /prompt answers is not missed."""

    def __init__(self, base: str, ws: ClientConnection, http: httpx.AsyncClient, cid: str):
        self.base, self.ws, self.http, self.client_id = base, ws, http, cid
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._outputs: dict[str, dict[str, Any]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base: str, http: httpx.AsyncClient) -> Direct:
        cid = f"bench-{uuid.uuid4().hex[:8]}"
        ws = await connect(f"ws{base[4:]}/ws?clientId={cid}", max_size=None, proxy=None)
        return cls(base, ws, http, cid)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()

    async def _read(self) -> None:
        async for frame in self.ws:
            if not isinstance(frame, str):
                continue
            message = json.loads(frame)
            data = message.get("data") or {}
            prompt_id = data.get("prompt_id")
            if prompt_id not in self._waiting:
                continue
            if message["type"] == "executed":
                self._outputs.setdefault(prompt_id, {})[str(data["node"])] = data["output"]
            elif message["type"] == "execution_success":
                self._waiting.pop(prompt_id).set_result(self._outputs.pop(prompt_id, {}))
            elif message["type"] in ("execution_error", "execution_interrupted"):
                self._waiting.pop(prompt_id).set_exception(AssertionError(str(data)))

    async def run(self, graph: dict[str, Any], fetch: bool = True) -> Timed:
        started = time.perf_counter()
        prompt_id = uuid.uuid4().hex
        done = self._waiting[prompt_id] = asyncio.get_running_loop().create_future()
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        (await self.http.post(f"{self.base}/prompt", json=body)).raise_for_status()
        outputs = await done
        if not fetch:
            return time.perf_counter() - started, 0.0, 0.0
        image = outputs["3"]["images"][0]
        fetched = time.perf_counter()
        (await self.http.get(f"{self.base}/view", params=image)).raise_for_status()
        end = time.perf_counter()
        return end - started, 0.0, end - fetched
