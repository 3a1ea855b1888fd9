"""The supervisor's side of the fork server (`_zygote`): starting it, asking it for instances,
and handles on the processes it forks.

Who waits for a forked instance: the fork server is its parent, so only it can reap the child and
learn the exit status; it sends `{"pid", "exit"}` over the channel when it does. The supervisor
holds a pidfd of each child (sent with the pid) so it can also tell when one has gone without
the server, and signals the child's process group (`killpg`) as it does for a plain start.
The chain of PDEATHSIGs keeps the old guarantee: the supervisor dies -> the server dies -> every
instance it forked dies. The server dying alone takes its instances with it; the supervisor then
sees them exit (SIGKILL), starts them again the plain way, and starts a new server.

A pid-subreaper design (PR_SET_CHILD_SUBREAPER, double fork, the supervisor reaping) was not
taken: the supervisor would inherit every orphan of every instance and hook, and would have to
reap pids that asyncio's own child watcher also waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from comfyfleet.supervise._logs import RotatingLog
from comfyfleet.supervise._process import ProcessHandle, SubprocessLauncher
from comfyfleet.supervise._zygote import MAX_PACKET, READY_KEY, decode, encode

ZYGOTE = Path(__file__).with_name("_zygote.py")


class ForkUnavailable(Exception):
    """The fork server cannot fork this instance; the reason says why (a plain start follows)."""


class ForkedChild:
    """A process the fork server forked: the ProcessHandle of `_process`, fed by the channel."""

    def __init__(self, pid: int, pidfd: int | None) -> None:
        self._pid = pid
        self._pidfd = pidfd
        self.pump: asyncio.Task[None] | None = None
        """Copies its output into its log; set by whoever made the pipe."""
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        code = await asyncio.shield(self._exit)
        if self.pump is not None:
            await asyncio.wait({self.pump}, timeout=2.0)
        return code

    def signal_group(self, sig: int) -> None:
        if self._exit.done():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    def exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def orphaned(self) -> None:
        """The server went away: the kernel kills this child (its PDEATHSIG); make sure, and
        wait until it is gone, so that a new start does not meet it on its port."""
        self.signal_group(signal.SIGKILL)
        for _ in range(200):
            if not _alive(self._pid, self._pidfd):
                break
            await asyncio.sleep(0.05)
        self.exited(-signal.SIGKILL)


def _alive(pid: int, pidfd: int | None) -> bool:
    if pidfd is not None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, 0)
            return True
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ForkServer:
    """One fork server process and the channel to it."""

    def __init__(
        self,
        *,
        python: str,
        comfyui_dir: str,
        env: Mapping[str, str],
        preload: Sequence[str],
        title_room: int,
        log: RotatingLog,
    ) -> None:
        self.python = python
        self.comfyui_dir = comfyui_dir
        self.env = dict(env)
        self._preload = tuple(preload)
        self._title_room = title_room
        self._log = log
        self.state = "stopped"  # starting | ready | failed | gone
        self.reason = ""
        self.details: dict[str, Any] = {}
        self._channel: socket.socket | None = None
        self._proc: ProcessHandle | None = None
        self._ready: asyncio.Future[bool] | None = None
        self._next_id = 0
        self._requests: dict[int, asyncio.Future[ForkedChild]] = {}
        self._children: dict[int, ForkedChild] = {}
        self._orphans: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            self.python,
            str(ZYGOTE),
            "--channel-fd",
            str(theirs.fileno()),
            "--comfyui",
            self.comfyui_dir,
            "--preload",
            ",".join(self._preload),
            "--title-room",
            " " * self._title_room,
        ]
        self.state, self.reason = "starting", ""
        self._ready = loop.create_future()
        try:
            self._proc = await SubprocessLauncher(pass_fds=(theirs.fileno(),)).spawn(
                argv, env=self.env, cwd=Path(self.comfyui_dir), log=self._log
            )
        except OSError as exc:
            ours.close()
            self._gone(f"cannot start: {exc.strerror or exc}")
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel = ours
        loop.add_reader(ours.fileno(), self._receive)
        self._log.line(f"fork server: started pid {self._proc.pid}, preloading")

    async def wait_ready(self, timeout: float) -> bool:
        """True once it serves; False when it failed, went away, or took longer than `timeout`."""
        if self._ready is None:
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            return False

    async def fork(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, output: int
    ) -> ForkedChild:
        """Ask for one instance. `output` (the write end of its log pipe) is sent
        along and stays the caller's to close. ForkUnavailable when it cannot be done."""
        if self.state != "ready" or self._channel is None:
            raise ForkUnavailable(self.reason or f"the fork server is {self.state}")
        self._next_id += 1
        ident = self._next_id
        request = {"id": ident, "argv": list(argv), "env": dict(env), "cwd": cwd}
        answer: asyncio.Future[ForkedChild] = asyncio.get_running_loop().create_future()
        self._requests[ident] = answer
        try:
            socket.send_fds(self._channel, [encode(request)], [output])
        except OSError as exc:
            self._requests.pop(ident, None)
            raise ForkUnavailable(f"cannot reach the fork server: {exc}") from exc
        try:
            return await asyncio.wait_for(answer, 30.0)
        except TimeoutError:
            raise ForkUnavailable("the fork server did not answer within 30 s") from None
        finally:
            self._requests.pop(ident, None)

    # --- the channel ----------------------------------------------------------------------------
    def _receive(self) -> None:
        assert self._channel is not None
        while True:
            try:
                packet, fds, _, _ = socket.recv_fds(self._channel, MAX_PACKET, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._gone(f"channel failed: {exc}")
                return
            if not packet:
                self._gone("it exited" if self.state == "ready" else "it exited while preloading")
                return
            try:
                self._dispatch(decode(packet), fds)
            except ValueError as exc:
                self._log.line(f"fork server: {exc}")
                for fd in fds:
                    os.close(fd)

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        if READY_KEY in message:
            self.state, self.details = "ready", dict(message[READY_KEY])
            self._log.line(f"fork server: ready ({self.details})")
            self._settle_ready(True)
        elif "failed" in message:
            self._gone(f"not safe to fork from: {message['failed']}", failed=True)
        elif "exit" in message:
            child = self._children.pop(int(message["pid"]), None)
            if child is not None:
                child.exited(int(message["exit"]))
        elif "id" in message:
            answer = self._requests.get(int(message["id"]))
            if answer is None or answer.done():  # its caller gave up waiting: nobody owns it
                for fd in fds:
                    os.close(fd)
                if "pid" in message:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(message["pid"]), signal.SIGKILL)
            elif "pid" in message:
                # Registered here, before the next packet (its exit, maybe) is read.
                child = ForkedChild(int(message["pid"]), fds[0] if fds else None)
                self._children[child.pid] = child
                answer.set_result(child)
            else:
                answer.set_exception(ForkUnavailable(str(message.get("error"))))

    def _settle_ready(self, ok: bool) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(ok)

    def _gone(self, reason: str, *, failed: bool = False) -> None:
        """The server cannot serve any more: fail what waits on it; its children are dying."""
        was_ready = self.state == "ready"
        self.state = "failed" if failed or not was_ready else "gone"
        self.reason = f"fork server {reason}"
        self._log.line(self.reason)
        self._settle_ready(False)
        self._close_channel()
        for answer in self._requests.values():
            if not answer.done():
                answer.set_exception(ForkUnavailable(self.reason))
        for child in self._children.values():
            task = asyncio.ensure_future(child.orphaned())
            self._orphans.add(task)
            task.add_done_callback(self._orphans.discard)
        self._children.clear()
        if self._proc is not None:
            self._proc.signal_group(signal.SIGKILL)

    def _close_channel(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._channel.close()
            self._channel = None

    async def aclose(self) -> None:
        """Stop the server (closing the channel ends it; SIGKILL after a short grace)."""
        self._close_channel()
        if self.state in ("starting", "ready"):
            self.state, self.reason = "stopped", "fork server stopped"
        self._settle_ready(False)
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5.0)
            except TimeoutError:
                self._proc.signal_group(signal.SIGKILL)
                await self._proc.wait()
            self._proc = None
        if self._orphans:
            await asyncio.gather(*self._orphans)
