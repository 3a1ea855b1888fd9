"""An in-memory ComfyUI for the dispatcher's unit tests: HTTP through an httpx MockTransport,
the WebSocket through ComfyEvents' `connect` seam. It runs prompts one at a time like the real
worker thread: `FleetSleep` sleeps (interruptibly), `FleetFail` raises, `FleetWedge` blocks
without a word (deaf to interrupts, unless its `hears_interrupt` input is true) on the instance
its `instance` input names (-1: all), anything else succeeds with one image output."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from comfyfleet.comfy import ComfyClient, ComfyEvents


@dataclass
class _Prompt:
    prompt_id: str
    graph: dict[str, Any]
    client_id: str


class _Socket:
    def __init__(self, owner: FakeComfy) -> None:
        self.owner = owner
        self.frames: asyncio.Queue[str | None] = asyncio.Queue()

    async def recv(self) -> str:
        frame = await self.frames.get()
        if frame is None:
            raise ConnectionResetError("fake instance went away")
        return frame

    async def close(self) -> None:
        """As a real socket: a receive waiting now ends (closed from our side)."""
        self.owner.sockets.discard(self)
        self.frames.put_nowait(None)


@dataclass
class FakeComfy:
    name: str
    alive: bool = True
    queue: list[_Prompt] = field(default_factory=list)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    sockets: set[_Socket] = field(default_factory=set)
    current: str | None = None
    interrupted: bool = False
    submit_delay_s: float = 0.0
    """How long POST /prompt takes to answer (ComfyUI answers late while its worker runs)."""
    index: int = 0
    """The instance index it runs as (what `FleetWedge` compares its `instance` input with)."""
    freed: list[dict[str, Any]] = field(default_factory=list)
    """The bodies of the POST /free requests it got."""
    interrupts: list[str | None] = field(default_factory=list)
    """The prompt ids POST /interrupt named (None: whatever runs)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker())

    def kill(self) -> None:
        """Like kill -9: connections drop, nothing answers, queued prompts are gone."""
        self.alive = False
        self.queue.clear()
        for sock in list(self.sockets):
            sock.frames.put_nowait(None)
        if self._task:
            self._task.cancel()

    def restart(self) -> None:
        """Like a process restart: what ran or waited is gone, then it answers again."""
        self.kill()
        self.alive, self.current, self.interrupted = True, None, False
        self.start()

    # --- seams -----------------------------------------------------------------------------
    def client(self, url: str) -> ComfyClient:
        return ComfyClient(url, transport=httpx.MockTransport(self._handle))

    def events(self, url: str, client_id: str) -> ComfyEvents:
        async def connect(_url: str) -> _Socket:
            if not self.alive:
                raise ConnectionRefusedError("fake instance is down")
            sock = _Socket(self)
            self.sockets.add(sock)
            return sock

        return ComfyEvents(
            url, client_id, connect=connect, reconnect_initial_s=0.01, reconnect_max_s=0.05
        )

    # --- HTTP ------------------------------------------------------------------------------
    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if not self.alive:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/prompt" and request.method == "POST":
            body = json.loads(request.content)
            bad = [n for n, node in body["prompt"].items() if node["class_type"] == "Nope"]
            if bad:
                return httpx.Response(
                    400,
                    json={
                        "error": {
                            "type": "invalid_prompt",
                            "message": "Cannot execute because node Nope does not exist.",
                            "details": "",
                            "extra_info": {},
                        },
                        "node_errors": {},
                    },
                )
            self.queue.append(_Prompt(body["prompt_id"], body["prompt"], body["client_id"]))
            self._wake.set()
            await asyncio.sleep(self.submit_delay_s)
            return httpx.Response(200, json={"prompt_id": body["prompt_id"], "number": 1})
        if path.startswith("/history/"):
            pid = path.rsplit("/", 1)[1]
            return httpx.Response(200, json={pid: self.history[pid]} if pid in self.history else {})
        if path == "/interrupt":
            wanted = json.loads(request.content or b"{}").get("prompt_id")
            self.interrupts.append(wanted)
            if wanted is None or wanted == self.current:
                self.interrupted = True
            return httpx.Response(200)
        if path == "/free":
            self.freed.append(json.loads(request.content or b"{}"))
            return httpx.Response(200)
        if path == "/queue":
            doomed = set(json.loads(request.content).get("delete", []))
            self.queue = [p for p in self.queue if p.prompt_id not in doomed]
            return httpx.Response(200)
        return httpx.Response(404)

    # --- the worker ------------------------------------------------------------------------
    def _send(self, kind: str, data: dict[str, Any]) -> None:
        frame = json.dumps({"type": kind, "data": data})
        for sock in list(self.sockets):
            sock.frames.put_nowait(frame)

    async def _worker(self) -> None:
        while True:
            while not self.queue:
                self._wake.clear()
                await self._wake.wait()
            prompt = self.queue.pop(0)
            self.current, self.interrupted = prompt.prompt_id, False
            await self._run(prompt)
            self.current = None

    async def _run(self, prompt: _Prompt) -> None:
        pid = prompt.prompt_id
        self._send("execution_start", {"prompt_id": pid})
        for node_id, node in prompt.graph.items():
            kind = node["class_type"]
            if kind == "FleetSleep":
                seconds = float(node["inputs"].get("seconds", 0.05))
                for step in range(1, 5):
                    await asyncio.sleep(seconds / 4)
                    if self.interrupted:
                        self._send(
                            "execution_interrupted",
                            {"prompt_id": pid, "node_id": node_id, "node_type": kind},
                        )
                        self.history[pid] = {"status": {"status_str": "error"}, "outputs": {}}
                        return
                    self._send(
                        "progress", {"prompt_id": pid, "node": node_id, "value": step, "max": 4}
                    )
            if kind == "FleetWedge" and node["inputs"].get("instance", -1) in (-1, self.index):
                self._send("executing", {"prompt_id": pid, "node": node_id})
                hears = bool(node["inputs"].get("hears_interrupt"))
                while not (hears and self.interrupted):
                    await asyncio.sleep(0.01)
                self._send(
                    "execution_interrupted",
                    {"prompt_id": pid, "node_id": node_id, "node_type": kind},
                )
                self.history[pid] = {"status": {"status_str": "error"}, "outputs": {}}
                return
            if kind == "FleetFail":
                error = {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": kind,
                    "exception_type": "RuntimeError",
                    "exception_message": node["inputs"].get("message", "boom"),
                }
                self.history[pid] = {
                    "status": {
                        "status_str": "error",
                        "messages": [
                            ["execution_start", {"prompt_id": pid}],
                            ["execution_error", error],
                        ],
                    },
                    "outputs": {},
                }
                self._send("execution_error", error)
                return
        prefix = next(
            (
                n["inputs"]["filename_prefix"]
                for n in prompt.graph.values()
                if "filename_prefix" in n.get("inputs", {})
            ),
            "out",
        )
        folder, _, stem = prefix.rpartition("/")
        image = {"filename": f"{stem}_00001_.png", "subfolder": folder, "type": "output"}
        self._send("executed", {"prompt_id": pid, "node": "9", "output": {"images": [image]}})
        self.ran.append(pid)
        # As ComfyUI does: success is reported just before the history entry is filed.
        self._send("execution_success", {"prompt_id": pid})
        await asyncio.sleep(0)
        self.history[pid] = {
            "status": {"status_str": "success"},
            "outputs": {"9": {"images": [image]}},
        }
