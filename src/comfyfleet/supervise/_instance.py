"""One supervised ComfyUI process, driven through the state model of `_states`.

An instance's task loops: start (pre-start hook, spawn, probe until ready or exit or timeout,
warm-up), watch (probe every interval; a dead or silent process ends the watch), back off, start
again. Failed starts in a row beyond `start_retries` end in FATAL, where it waits for `restart()`.
`recycle()` restarts a serving instance at once, without backoff (a watchdog's request).
Signals, stops and recycles only set events; the loop acts on them, so there is one place where
state moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfleet.supervise._logs import RotatingLog
from comfyfleet.supervise._probe import Prober
from comfyfleet.supervise._process import Launcher, ProcessHandle
from comfyfleet.supervise._settings import FleetSettings
from comfyfleet.supervise._states import SERVING, InstanceEvent, State, check_transition
from comfyfleet.supervise._status import InstanceStatus, process_tree_rss
from comfyfleet.supervise._waits import shown_host, wait_any, wait_event
from comfyfleet.supervise._warmup import HttpWarmupRunner, Warmup, WarmupRunner

PortPicker = Callable[[int, int], tuple[int, str | None]]
"""(instance index, wanted port) -> (port to use, note when it differs)."""


@dataclass(frozen=True)
class InstanceSpec:
    """What one instance runs; `command(port)` builds its argv for the chosen port."""

    index: int
    command: Callable[[int], Sequence[str]]
    env: Mapping[str, str]
    cwd: Path
    host: str
    wanted_port: int
    device: str
    log_path: Path
    pre_start_hook: Path | None = None


@dataclass(frozen=True)
class _Outcome:
    kind: str  # "stopped" | "start_failed" | "crashed" | "recycled"
    reason: str = ""


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Instance:
    def __init__(
        self,
        spec: InstanceSpec,
        settings: FleetSettings,
        *,
        launcher: Launcher,
        prober: Prober,
        pick_port: PortPicker,
        emit: Callable[[InstanceEvent], None],
        warmup: Warmup | None = None,
        warmer: WarmupRunner | None = None,
    ) -> None:
        self.spec = spec
        self._warmup = warmup
        self._warmer = warmer or HttpWarmupRunner()
        self.settings = settings
        self._launcher = launcher
        self._prober = prober
        self._pick_port = pick_port
        self._emit = emit
        self.state = State.STOPPED
        self.port = spec.wanted_port
        self.pid: int | None = None
        self.restarts = 0
        self.failures = 0
        self._streak = 0
        self.started_at: float | None = None
        self.ready_since: float | None = None
        self.version: str | None = None
        self.last_reason = ""
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._nudge = asyncio.Event()
        """Set by stop() and recycle(): wakes the watch at once."""
        self._recycle: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._proc: ProcessHandle | None = None

    # --- control ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=f"instance-{self.spec.index}")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._nudge.set()
        if self._task is not None:
            await self._task

    def kill_now(self) -> None:
        """SIGKILL the process group at once (a second Ctrl-C); the loop then sees the exit."""
        self._stop.set()
        self._wake.set()
        if self._proc is not None:
            self._proc.signal_group(signal.SIGKILL)

    def restart(self) -> None:
        """Leave FATAL or BACKOFF at once and try again with a fresh retry budget."""
        self.failures = 0
        self._streak = 0
        self._wake.set()

    def recycle(self, reason: str) -> bool:
        """Restart a serving instance now (RESTARTING: SIGTERM, grace, SIGKILL, then a fresh
        start without backoff). False when it is not serving: starting, backing off or stopped,
        it runs no job anyway."""
        if self.state not in SERVING or self._stop.is_set():
            return False
        self._recycle = reason
        self._nudge.set()
        return True

    async def cycle(self) -> None:
        """Stop the process (SIGTERM, grace, SIGKILL) and start a fresh one: a restart asked
        for by a person, counted with the others."""
        await self.stop()
        self.failures = 0
        self._streak = 0
        self.restarts += 1
        self.start()

    def status(self) -> InstanceStatus:
        return InstanceStatus(
            index=self.spec.index,
            state=self.state,
            pid=self.pid,
            port=self.port,
            device=self.spec.device,
            started_at=self.started_at,
            ready_since=self.ready_since,
            restarts=self.restarts,
            rss_bytes=process_tree_rss(self.pid),
            version=self.version,
            reason=self.last_reason,
            url=f"http://{shown_host(self.spec.host)}:{self.port}",
        )

    # --- the loop --------------------------------------------------------------------------
    def _set(self, new: State, reason: str = "") -> None:
        check_transition(self.state, new)
        old, self.state, self.last_reason = self.state, new, reason
        self._emit(InstanceEvent(self.spec.index, old, new, reason, self.pid, self.port))

    async def _run(self) -> None:
        log = RotatingLog(
            self.spec.log_path,
            max_bytes=self.settings.log_max_bytes,
            backups=self.settings.log_backups,
        )
        try:
            while not self._stop.is_set():
                self._set(State.STARTING, self._start_reason())
                outcome = await self._attempt(log)
                if outcome.kind == "stopped" or self._stop.is_set():
                    break
                if outcome.kind == "recycled":
                    log.line(f"instance {self.spec.index}: restarting ({outcome.reason})")
                    self.restarts += 1
                    continue
                if not await self._after_failure(outcome, log):
                    break
        finally:
            await self._shut_down(log)
            log.close()

    def _start_reason(self) -> str:
        if self.state == State.STOPPED:
            return ""
        if self.state == State.FATAL:
            return "restart requested"
        return f"restart {self.restarts}"

    async def _after_failure(self, outcome: _Outcome, log: RotatingLog) -> bool:
        """Back off (or go FATAL) after a failed start or a crash; False means stop the loop."""
        log.line(f"instance {self.spec.index}: {outcome.reason}")
        if outcome.kind == "crashed":
            self._set(State.EXITED, outcome.reason)
        else:
            self.failures += 1
            if self.failures > self.settings.start_retries:
                self._set(
                    State.FATAL,
                    f"{outcome.reason}; gave up after {self.failures} failed starts in a row",
                )
                self._wake.clear()
                await self._wake.wait()
                self.restarts += 1
                return not self._stop.is_set()
        s = self.settings
        # The first crash after a good run restarts at once (crash_restart_s); later ones wait
        # as failed starts do.
        step = self._streak - 1 if outcome.kind == "crashed" else self._streak
        delay = (
            s.crash_restart_s
            if step < 0
            else min(s.backoff_max_s, s.backoff_initial_s * s.backoff_factor**step)
        )
        self._streak += 1
        self._set(State.BACKOFF, f"{outcome.reason}; restarting in {delay:.3g}s")
        self._wake.clear()
        await wait_event(self._wake, delay)
        self.restarts += 1
        return not self._stop.is_set()

    async def _attempt(self, log: RotatingLog) -> _Outcome:
        self.port, note = self._pick_port(self.spec.index, self.spec.wanted_port)
        if note:
            log.line(note)
            self.last_reason = note
        if self.spec.pre_start_hook is not None:
            failed = await self._run_hook(log)
            if failed:
                return _Outcome("start_failed", failed)
        try:
            proc = await self._launcher.spawn(
                self.spec.command(self.port), env=self.spec.env, cwd=self.spec.cwd, log=log
            )
        except OSError as exc:
            return _Outcome("start_failed", f"cannot start: {exc.strerror or exc}")
        self._proc = proc
        self.pid, self.started_at, self.ready_since = proc.pid, time.time(), None
        log.line(f"instance {self.spec.index}: started pid {proc.pid} on port {self.port}")
        exited = asyncio.ensure_future(proc.wait())
        try:
            outcome = await self._until_ready(proc, exited)
            if outcome is None:
                outcome = await self._watch(proc, exited)
        finally:
            if not exited.done():
                exited.cancel()
        return outcome

    async def _until_ready(
        self, proc: ProcessHandle, exited: asyncio.Future[int]
    ) -> _Outcome | None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        interval = min(0.1, self.settings.probe_interval_s)
        while True:
            if self._stop.is_set():
                return _Outcome("stopped")
            if exited.done():
                return _Outcome(
                    "start_failed",
                    f"exited with {describe_exit(exited.result())} before it was ready",
                )
            if time.monotonic() > deadline:
                await self._terminate(proc)
                return _Outcome(
                    "start_failed",
                    f"not ready after {self.settings.startup_timeout_s:g}s (startup_timeout_s)",
                )
            result = await self._prober.probe(self.spec.host, self.port)
            if result.ok:
                self.version = result.version or self.version
                warmed = await self._warm_up(proc, exited)
                if warmed is not None:
                    return warmed
                self.failures = 0
                self.ready_since = time.time()
                busy = result.busy and self.state == State.STARTING  # a warm-up waited it out
                self._set(State.BUSY if busy else State.READY)
                return None
            await wait_any(exited, (self._stop,), interval)

    async def _warm_up(self, proc: ProcessHandle, exited: asyncio.Future[int]) -> _Outcome | None:
        """Run the instance's warm-up workflow (WARMING), if it has one; None when it ran, else
        the outcome of the start (a failed warm-up stops the process: a failed start)."""
        graph = None if self._warmup is None else self._warmup.graph_for(self.spec.index)
        if graph is None or self._warmup is None:
            return None
        self._set(State.WARMING, "running the warm-up workflow")
        url = f"http://{shown_host(self.spec.host)}:{self.port}"
        running = asyncio.ensure_future(self._warmer.run(url, graph, self._warmup.timeout_s))
        stopping = asyncio.ensure_future(self._stop.wait())
        waited: set[asyncio.Future[Any]] = {running, exited, stopping}
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        if self._stop.is_set():
            return _Outcome("stopped")
        if exited.done():
            code = describe_exit(exited.result())
            return _Outcome("start_failed", f"exited with {code} during the warm-up")
        try:
            error = running.result()
        except Exception as exc:  # a bug in a runner must not end the instance's loop
            error = f"warm-up failed: {type(exc).__name__}: {exc}"
        if error is None:
            return None
        await self._terminate(proc)
        return _Outcome("start_failed", error)

    async def _watch(self, proc: ProcessHandle, exited: asyncio.Future[int]) -> _Outcome:
        last_ok = time.monotonic()
        while True:
            await wait_any(exited, (self._stop, self._nudge), self.settings.probe_interval_s)
            if self._stop.is_set():
                return _Outcome("stopped")
            if self._recycle is not None:
                reason, self._recycle = self._recycle, None
                self._nudge.clear()
                self._set(State.RESTARTING, reason)
                await self._terminate(proc)
                return _Outcome("recycled", reason)
            if self.ready_since and time.time() - self.ready_since >= self.settings.backoff_reset_s:
                self._streak = 0
            if exited.done():
                return _Outcome("crashed", f"exited with {describe_exit(exited.result())}")
            result = await self._prober.probe(self.spec.host, self.port)
            now = time.monotonic()
            if result.ok:
                last_ok = now
                wanted = State.BUSY if result.busy else State.READY
                if wanted != self.state and self.state in SERVING:
                    self._set(wanted)
            elif now - last_ok > self.settings.unhealthy_after_s:
                await self._terminate(proc)
                return _Outcome(
                    "crashed", f"stopped answering for {now - last_ok:.0f}s ({result.error})"
                )

    async def _run_hook(self, log: RotatingLog) -> str | None:
        hook = self.spec.pre_start_hook
        assert hook is not None
        env = {
            **self.spec.env,
            "COMFYFLEET_INSTANCE": str(self.spec.index),
            "COMFYFLEET_PORT": str(self.port),
            "COMFYFLEET_DEVICE": self.spec.device,
        }
        log.line(f"running pre-start hook {hook}")
        try:
            proc = await self._launcher.spawn([str(hook)], env=env, cwd=self.spec.cwd, log=log)
        except OSError as exc:
            return f"pre-start hook {hook} cannot run: {exc.strerror or exc}"
        try:
            async with asyncio.timeout(self.settings.hook_timeout_s):
                code = await proc.wait()
        except TimeoutError:
            await self._terminate(proc)
            return f"pre-start hook {hook} took longer than {self.settings.hook_timeout_s:g}s"
        return None if code == 0 else f"pre-start hook {hook} failed with {describe_exit(code)}"

    async def _terminate(self, proc: ProcessHandle) -> None:
        """SIGTERM to the process group, then SIGKILL after the grace period."""
        if proc.returncode is not None:
            return
        proc.signal_group(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.settings.stop_grace_s):
                await proc.wait()
        except TimeoutError:
            proc.signal_group(signal.SIGKILL)
            await proc.wait()

    async def _shut_down(self, log: RotatingLog) -> None:
        if self.state == State.STOPPED:
            return
        self._set(State.STOPPING, "asked to stop")
        if self._proc is not None:
            await self._terminate(self._proc)
            self._proc = None
        self.pid = None
        log.line(f"instance {self.spec.index}: stopped")
        self._set(State.STOPPED)
