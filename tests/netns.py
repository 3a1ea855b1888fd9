"""A network namespace joined to this one by a veth pair, and a TCP forwarder into it.

The namespace is the "other machine": whatever runs under :meth:`Namespace.command` has its own
loopback and reaches this machine only through the veth pair, at `host_ip` (the host's end;
the namespace's end is `inner_ip`). Both addresses are a /30 of 10.200.0.0/16 that the
namespace owns; nothing else is ever addressed.

Cutting the link sets the host's end down. The namespace's end stays up with its route, so a
process inside sees what a real partition looks like: its packets vanish, connections hang
until a timeout says otherwise, nothing answers "unreachable". On the host a blackhole route
for the /30 (added at setup, below the link's own route) keeps replies aimed at the namespace
from leaving by the default route while the link is down.

:class:`Forwarder` listens on `host_ip` and pipes each connection to a server on loopback (the
machine's PostgreSQL), so a process in the namespace reaches it through the cuttable link.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator


class NamespaceRefused(Exception):
    """The kernel or the machine does not let this process make namespaces."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceRefused(f"`ip {' '.join(args)}`: {done.stderr.strip()}")


class Namespace:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"cff{tag}"
        self.host_dev, self.inner_dev = f"cfh{tag}", f"cfa{tag}"
        third = int(tag[:2], 16)
        fourth = int(tag[2:4], 16) & 0xFC
        self.net = f"10.200.{third}.{fourth}/30"
        self.host_ip = f"10.200.{third}.{fourth + 1}"
        self.inner_ip = f"10.200.{third}.{fourth + 2}"
        self._steps: list[list[str]] = []

    def command(self, argv: list[str]) -> list[str]:
        """`argv` to run inside the namespace (the environment passes through)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def create(self) -> None:
        if shutil.which("ip") is None:
            raise NamespaceRefused("the `ip` command (iproute2) is not installed")
        if os.geteuid() != 0:
            raise NamespaceRefused("making network namespaces needs root (CAP_NET_ADMIN)")
        _ip("netns", "add", self.name)
        self._steps.append(["netns", "del", self.name])
        _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.inner_dev)
        self._steps.append(["link", "del", self.host_dev])
        _ip("link", "set", self.inner_dev, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
        _ip("route", "add", "blackhole", self.net, "metric", "1000")
        self._steps.append(["route", "del", "blackhole", self.net, "metric", "1000"])
        _ip("link", "set", self.host_dev, "up")
        inside = ["-n", self.name]
        _ip(*inside, "addr", "add", f"{self.inner_ip}/30", "dev", self.inner_dev)
        _ip(*inside, "link", "set", self.inner_dev, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        _ip("link", "set", self.host_dev, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_dev, "up")

    def remove(self) -> None:
        for step in reversed(self._steps):
            with contextlib.suppress(NamespaceRefused):
                _ip(*step)
        self._steps.clear()


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace, removed afterwards whatever happened (processes inside must be
    stopped by then)."""
    made = Namespace()
    try:
        made.create()
        yield made
    finally:
        made.remove()


class Forwarder:
    """Accepts on (host, port) and copies bytes both ways to `target`, a thread per direction."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for each in sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
