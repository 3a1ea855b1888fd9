"""The fork server ("zygote"): imports ComfyUI's heavy libraries once, then forks instances.

It runs as a script under ComfyUI's own Python (`venv/bin/python _zygote.py ...`), so it uses the
standard library only and imports nothing from comfyfleet. ComfyUI's own start spends most of its
seconds importing torch, transformers, scipy, aiohttp and the like; none of them touches the GPU
when imported. This process imports them, then waits for requests on one SOCK_SEQPACKET channel
(a socketpair end inherited from the supervisor: nobody else can ask it for anything). For each
request it forks; the child becomes what `python main.py ...` would have been: its own session
(process group), its own environment, stdout and stderr into the pipe the supervisor passed with
the request, killed with the fork server (PDEATHSIG), and then ComfyUI's main.py runs in it. What
reads ComfyUI's arguments or picks the device (comfy.cli_args, comfy.model_management,
folder_paths) is never imported here: it runs in each child, after the fork, so
CUDA_VISIBLE_DEVICES and the arguments are each instance's own.

Messages, one JSON object per packet (the protocol is `encode`/`decode` below):
  supervisor -> server  {"id", "argv", "env", "cwd"} + the log pipe's write end
  server -> supervisor  {"ready": {...}} once, or {"failed": reason} and exit
                        {"id", "pid"} + a pidfd of the child (where the kernel has pidfd_open)
                        {"id", "error"} when it cannot fork
                        {"pid", "exit"} when a child exits (exit: code, or -signal)
The server exits when the channel closes.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import CodeType
from typing import Any, NoReturn

if __name__ == "__main__":  # run as a script under ComfyUI's Python: its sibling, by folder
    from _zygote_prep import (  # type: ignore[import-not-found]
        compile_tree,
        preload,
        set_title,
        unsafe_to_fork,
        use_compiled,
        warm_module_index,
    )
else:
    from comfyfleet.supervise._zygote_prep import (
        compile_tree,
        preload,
        set_title,
        unsafe_to_fork,
        use_compiled,
        warm_module_index,
    )

MAX_PACKET = 1 << 20
READY_KEY = "ready"


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(packet: bytes) -> dict[str, Any]:
    """One packet as a message; a ValueError that says what was wrong otherwise."""
    try:
        message = json.loads(packet)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"fork server message is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ValueError(f"fork server message is not an object: {packet[:80]!r}")
    return message


def check_request(message: dict[str, Any]) -> tuple[int, list[str], dict[str, str], str]:
    """(id, argv, env, cwd) of a fork request, or a ValueError naming the bad field."""
    ident, argv, env, cwd = (message.get(k) for k in ("id", "argv", "env", "cwd"))
    if not isinstance(ident, int):
        raise ValueError("fork request: 'id' must be an integer")
    if not isinstance(argv, list) or len(argv) < 2 or not all(isinstance(a, str) for a in argv):
        raise ValueError("fork request: 'argv' must be [python, script, args...] (strings)")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError("fork request: 'env' must map strings to strings")
    if not isinstance(cwd, str):
        raise ValueError("fork request: 'cwd' must be a string")
    return ident, argv, env, cwd


# --- the server ------------------------------------------------------------------------------
class _Server:
    def __init__(
        self,
        channel: socket.socket,
        comfyui_dir: str,
        compiled: dict[str, tuple[bytes, CodeType]],
    ) -> None:
        self.channel = channel
        self.comfyui_dir = comfyui_dir
        self.compiled = compiled
        self.children: dict[int, int] = {}  # pid -> request id
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        try:
            socket.send_fds(self.channel, [encode(message)], list(fds))
        except OSError:
            pass  # the supervisor is gone; the channel's EOF ends the loop

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.channel, selectors.EVENT_READ, "channel")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in self.selector.select():
                if key.data == "wake":
                    os.read(self.wake_r, 4096)
                    self.reap()
                elif not self.receive():
                    return

    def receive(self) -> bool:
        try:
            packet, fds, _, _ = socket.recv_fds(self.channel, MAX_PACKET, 4)
        except InterruptedError:
            return True
        if not packet:
            return False
        try:
            ident, argv, env, cwd = check_request(decode(packet))
        except ValueError as exc:
            for fd in fds:
                os.close(fd)
            self.send({"id": -1, "error": str(exc)})
            return True
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self.send({"id": ident, "error": "fork request: one log pipe must come with it"})
            return True
        self.fork(ident, argv, env, cwd, fds[0])
        return True

    def fork(self, ident: int, argv: list[str], env: dict[str, str], cwd: str, log: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(log)
            self.send({"id": ident, "error": f"fork failed: {exc}"})
            return
        if pid == 0:  # pragma: no cover - the child; it never returns
            self.become_instance(argv, env, cwd, log)
        os.close(log)
        self.children[pid] = ident
        pidfd: list[int] = []
        if hasattr(os, "pidfd_open"):
            try:
                pidfd.append(os.pidfd_open(pid))
            except OSError:
                pass
        self.send({"id": ident, "pid": pid}, pidfd)
        for fd in pidfd:
            os.close(fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.children.pop(pid, None) is not None:
                self.send({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def become_instance(  # pragma: no cover - runs in the forked child
        self, argv: list[str], env: dict[str, str], cwd: str, log: int
    ) -> NoReturn:
        """Turn this child into `argv` run in `cwd` with `env`. It leaves by SystemExit, which
        unwinds out of the server's loop and ends the interpreter as `python main.py` ends
        (atexit handlers, flushed streams, the exit code)."""
        try:
            parent = os.getppid()
            os.setsid()
            _die_with(signal.SIGKILL)
            if os.getppid() != parent:  # the server died between fork() and prctl()
                os._exit(1)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            self.channel.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(null)
            os.close(log)
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            _fresh_random_state()
            use_compiled(self.compiled)
            set_title(argv)
            sys.argv = argv[1:]
            runpy.run_path(os.path.join(cwd, argv[1]), run_name="__main__")
        except SystemExit:
            raise
        except BaseException:
            import traceback

            traceback.print_exc()
            raise SystemExit(1) from None
        raise SystemExit(0)


def _fresh_random_state() -> None:  # pragma: no cover - runs in the forked child
    """numpy's global generator was seeded once, in the server: every child would draw the same
    numbers. A fresh process seeds it from the OS; so does each child. (Python's `random`
    reseeds itself after a fork; torch's default seed is the same in every process anyway.)"""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _die_with(sig: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="comfyfleet's fork server for ComfyUI")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--comfyui", required=True, help="ComfyUI's folder")
    parser.add_argument("--preload", default="", help="modules, comma-separated")
    parser.add_argument("--title-room", default="", help="room for the instances' titles")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = _arguments(argv)
    _die_with(signal.SIGKILL)
    channel = socket.socket(fileno=args.channel_fd)
    comfyui_dir = os.path.realpath(args.comfyui)
    if "--title-room" in sys.argv:  # show the server's own command, without the room
        set_title([sys.executable, *sys.argv[: sys.argv.index("--title-room")]])
    os.chdir(comfyui_dir)
    sys.path[0] = comfyui_dir  # as for `python main.py`: ComfyUI's folder first, not this one
    started = time.monotonic()
    loaded, skipped = preload([n for n in args.preload.split(",") if n], comfyui_dir)
    for line in skipped:
        print(f"fork server: not preloaded: {line}", flush=True)
    compiled = compile_tree(comfyui_dir)
    warm_module_index(comfyui_dir)
    gc.collect()
    gc.freeze()  # the children never collect (or copy) what every one of them shares
    reason = unsafe_to_fork()
    if reason is not None:
        socket.send_fds(channel, [encode({"failed": reason})], [])
        return 1
    seconds = round(time.monotonic() - started, 3)
    ready = {"pid": os.getpid(), "loaded": len(loaded), "skipped": len(skipped), "s": seconds}
    print(
        f"fork server: {len(loaded)} modules preloaded, {len(compiled)} ComfyUI files compiled "
        f"in {seconds}s",
        flush=True,
    )
    socket.send_fds(channel, [encode({READY_KEY: ready})], [])
    _Server(channel, comfyui_dir, compiled).serve()
    sys.stdout.flush()
    os._exit(0)  # nothing to clean up; tearing down torch & co. would only delay `down`


if __name__ == "__main__":  # pragma: no cover - started by the supervisor
    sys.exit(main(sys.argv[1:]))
