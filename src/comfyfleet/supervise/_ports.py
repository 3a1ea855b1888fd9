"""Choosing a listening port for an instance: base+index, or the next free one when taken."""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection

from comfyfleet.errors import PortInUseError


def port_is_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` the way ComfyUI's server binds it (reuse-address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(
    host: str,
    wanted: int,
    *,
    avoid: Collection[int] = (),
    policy: str = "next",
    probe: Callable[[str, int], bool] = port_is_free,
) -> tuple[int, str | None]:
    """The port to use and, when it is not `wanted`, a note saying why.

    `policy` "fail" raises :class:`PortInUseError` naming the port; "next" walks up to the next
    port that is free and not in `avoid` (ports planned for other instances).
    """
    check = probe
    if wanted not in avoid and check(host, wanted):
        return wanted, None
    if policy == "fail":
        raise PortInUseError(
            f"port {wanted} on {host} is in use",
            hint="stop what listens there, choose --base-port, or set fleet.port_conflict: next",
        )
    for port in range(wanted + 1, min(wanted + 1000, 65536)):
        if port not in avoid and check(host, port):
            return port, f"port {wanted} is in use, took {port}"
    raise PortInUseError(f"no free port on {host} from {wanted} to {wanted + 999}")
