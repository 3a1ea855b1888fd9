"""The control socket: how `status`, `down`, `logs` and `up --detach` reach a running supervisor.

A Unix socket in the workspace (`state/supervisor.sock`), newline-delimited JSON, one request per
connection. A supervisor is found by answering here, never by a stored pid: a socket file that
refuses connections is a dead supervisor's, and is treated as "not running".

Requests: `{"op": "ping"}`, `{"op": "status"}`, `{"op": "wait", "timeout": S}` (until every
instance serves or one is fatal), `{"op": "restart", "instance": N|null}`, `{"op": "recycle",
"instance": N, "reason": TEXT}` (restart a serving instance now: a watchdog in another process
asks), `{"op": "down"}` (answers once everything stopped), `{"op": "events"}` (recent events,
then live ones, streamed).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from comfyfleet.errors import NotRunningError, SupervisorError
from comfyfleet.supervise._supervisor import Supervisor

_MAX_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > _MAX_PATH:
        raise SupervisorError(
            f"workspace path too long for a control socket ({path})",
            hint="use a workspace with a shorter path",
        )


class ControlServer:
    def __init__(
        self,
        supervisor: Supervisor,
        path: Path,
        *,
        workspace: Path,
        shutdown: Callable[[], Awaitable[None]],
    ) -> None:
        self._supervisor = supervisor
        self._path = path
        self._workspace = workspace
        self._shutdown = shutdown
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        check_socket_path(self._path)
        self._path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, path=str(self._path))
        os.chmod(self._path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._path.unlink(missing_ok=True)

    def _about(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "workspace": str(self._workspace),
            "started_at": self._supervisor.started_at,
        }

    def _status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "supervisor": self._about(),
            "instances": [s.to_dict() for s in self._supervisor.status()],
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line or b"{}")
            op = request.get("op") if isinstance(request, dict) else None
            if op == "events":
                await self._stream_events(writer)
                return
            reply = await self._answer(str(op), request)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _answer(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        if op == "ping":
            return {"ok": True, "supervisor": self._about()}
        if op == "status":
            return self._status()
        if op == "wait":
            timeout = float(request.get("timeout") or 600)
            try:
                await self._supervisor.wait_settled(timeout)
            except TimeoutError:
                pass
            return self._status()
        if op == "restart":
            index = request.get("instance")
            return {
                "ok": True,
                "restarted": self._supervisor.restart(None if index is None else int(index)),
            }
        if op == "recycle":
            index = request.get("instance")
            if not isinstance(index, int):
                return {"ok": False, "error": "recycle needs an instance number ('instance')"}
            reason = str(request.get("reason") or "restart requested")
            return {"ok": True, "restarted": await self._supervisor.recycle(index, reason)}
        if op == "down":
            await self._shutdown()
            return {"ok": True, "stopped": [i.spec.index for i in self._supervisor.instances]}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _stream_events(self, writer: asyncio.StreamWriter) -> None:
        with self._supervisor.subscribe() as queue:
            for event in list(self._supervisor.events):
                writer.write(json.dumps(event.to_dict()).encode() + b"\n")
            await writer.drain()
            while True:
                event = await queue.get()
                writer.write(json.dumps(event.to_dict()).encode() + b"\n")
                await writer.drain()


class ControlClient:
    """Blocking client used by the CLI."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self, timeout: float | None) -> socket.socket:
        if not self.path.exists():
            raise NotRunningError(
                f"no supervisor is running for {self.path.parent.parent}",
                hint="start one with `comfyfleet up`",
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            sock.close()
            raise NotRunningError(
                f"no supervisor is running for {self.path.parent.parent} (stale control socket)",
                hint="start one with `comfyfleet up`",
            ) from exc
        return sock

    def request(self, op: str, *, timeout: float | None = 10.0, **args: Any) -> dict[str, Any]:
        with self._connect(timeout) as sock:
            sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline()
        if not line:
            raise SupervisorError(f"the supervisor closed the connection during '{op}'")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise SupervisorError(f"supervisor refused '{op}': {reply.get('error')}")
        return reply

    def is_running(self) -> bool:
        try:
            self.request("ping", timeout=5.0)
        except (NotRunningError, OSError):
            return False
        return True

    def events(self, *, deadline: float | None = None) -> Iterator[dict[str, Any]]:
        """Recent and live events until the supervisor goes away (or `deadline`, monotonic)."""
        with self._connect(None) as sock:
            sock.sendall(b'{"op": "events"}\n')
            with sock.makefile("rb") as stream:
                while deadline is None or time.monotonic() < deadline:
                    if deadline is not None:
                        sock.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        line = stream.readline()
                    except TimeoutError:
                        return
                    if not line:
                        return
                    yield json.loads(line)
