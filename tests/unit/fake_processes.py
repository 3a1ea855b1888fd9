"""In-memory stand-ins for instance processes and probes, for the state-machine unit tests.

A fake process "serves" (answers probes) after `ready_after` probes, can exit with any code,
and obeys SIGTERM unless told to ignore it, like a hung ComfyUI would.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.supervise import ProbeResult, RotatingLog


@dataclass
class Behaviour:
    ready_after: int | None = 1  # probes before it answers; None: never
    exit_at_start: int | None = None  # exits at once with this code
    ignore_sigterm: bool = False
    busy: bool = False
    answers: bool = True  # False: alive but silent (hung)


@dataclass
class FakeProcess:
    pid: int
    argv: Sequence[str]
    behaviour: Behaviour
    port: int | None
    signals: list[int] = field(default_factory=list)
    probes: int = 0
    _done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def returncode(self) -> int | None:
        return self._done.result() if self._done.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def exit(self, code: int) -> None:
        if not self._done.done():
            self._done.set_result(code)

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and not self.behaviour.ignore_sigterm):
            self.exit(-sig)


class FakeLauncher:
    """Spawns fake processes; `behaviours` are used in order (the last one repeats)."""

    def __init__(self, *behaviours: Behaviour, hook_exit: int = 0) -> None:
        self.behaviours = list(behaviours) or [Behaviour()]
        self.hook_exit = hook_exit
        self.processes: list[FakeProcess] = []
        self.hooks: list[Mapping[str, str]] = []
        self._pids = itertools.count(1000)

    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: RotatingLog
    ) -> FakeProcess:
        if "COMFYFLEET_PORT" in env and argv[0].endswith("hook.sh"):
            self.hooks.append(env)
            hook = FakeProcess(next(self._pids), argv, Behaviour(), None)
            hook.exit(self.hook_exit)
            return hook
        index = min(len(self.processes), len(self.behaviours) - 1)
        behaviour = self.behaviours[index]
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv else None
        proc = FakeProcess(next(self._pids), argv, behaviour, port)
        log.write(f"fake process {proc.pid} started\n".encode())
        if behaviour.exit_at_start is not None:
            proc.exit(behaviour.exit_at_start)
        self.processes.append(proc)
        return proc

    def running(self) -> list[FakeProcess]:
        return [p for p in self.processes if p.returncode is None]


class FakeProber:
    def __init__(self, launcher: FakeLauncher) -> None:
        self.launcher = launcher

    async def probe(self, host: str, port: int) -> ProbeResult:
        for proc in reversed(self.launcher.processes):
            if proc.port != port or proc.returncode is not None:
                continue
            proc.probes += 1
            b = proc.behaviour
            if b.answers and b.ready_after is not None and proc.probes >= b.ready_after:
                return ProbeResult(ok=True, busy=b.busy, version="9.9.9")
            return ProbeResult(ok=False, error="connection refused")
        return ProbeResult(ok=False, error="connection refused")

    async def aclose(self) -> None:
        return None
