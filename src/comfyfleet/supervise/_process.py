"""Starting and signalling instance processes: the seam between the state machine and the OS.

The real launcher starts each ComfyUI in a new session (its own process group, so a stop reaches
every child it started), pipes its output into the instance's rotating log, and asks the kernel to
kill it if the supervisor itself dies (Linux), so no orphan keeps a GPU. Unit tests pass a fake.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from comfyfleet.supervise._logs import RotatingLog


class ProcessHandle(Protocol):
    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the whole process group; a no-op once it has exited."""


class Launcher(Protocol):
    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: RotatingLog
    ) -> ProcessHandle: ...


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process, pump: asyncio.Task[None]) -> None:
        self._proc = proc
        self._pump = pump

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        code = await self._proc.wait()
        await asyncio.wait({self._pump}, timeout=2.0)
        return code

    def signal_group(self, sig: int) -> None:
        if self._proc.returncode is not None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def pump_output(stream: asyncio.StreamReader, log: RotatingLog) -> None:
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):  # a line longer than the buffer
            line = await stream.read(1 << 16)
        if not line:
            return
        log.write(line)


class SubprocessLauncher:
    """Launches real processes."""

    def __init__(
        self,
        preexec: Callable[[], None] | None = _die_with_parent,
        *,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self._preexec = preexec
        self._pass_fds = tuple(pass_fds)

    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: RotatingLog
    ) -> ProcessHandle:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._preexec,
            pass_fds=self._pass_fds,
            limit=1 << 20,
        )
        assert proc.stdout is not None
        pump = asyncio.create_task(pump_output(proc.stdout, log), name=f"log-pump-{proc.pid}")
        return _Child(proc, pump)
