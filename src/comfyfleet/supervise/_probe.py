"""Active health probes: an instance is ready when ComfyUI answers `GET /system_stats`, and busy
when its queue is not empty. A process that exists but does not answer is not ready.

A server that answers HTTP but not as ComfyUI (a 4xx, a body that is not JSON, stats without a
`system` section) is told apart from one that does not answer at all: for an attached server
that is the difference between "down for now" and "the URL points at something else"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from comfyfleet.comfy import ComfyClient, ComfyError, ComfyProtocolError


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    busy: bool = False
    version: str | None = None
    error: str | None = None
    not_comfyui: bool = False
    """Something answered, but not as ComfyUI does (only meaningful when not `ok`)."""


class Prober(Protocol):
    async def probe(self, host: str, port: int) -> ProbeResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class UrlProber(Protocol):
    """Probes a server by its base URL (attached servers, which may use https or a path)."""

    async def probe_url(self, url: str) -> ProbeResult: ...

    async def aclose(self) -> None: ...


class HttpProber:
    """Probes over HTTP, one keep-alive client per instance address."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._clients: dict[str, ComfyClient] = {}

    def _client(self, url: str) -> ComfyClient:
        if url not in self._clients:
            self._clients[url] = ComfyClient(url, timeout=self._timeout)
        return self._clients[url]

    async def probe(self, host: str, port: int) -> ProbeResult:
        shown = f"[{host}]" if ":" in host else host
        return await self.probe_url(f"http://{shown}:{port}")

    async def probe_url(self, url: str) -> ProbeResult:
        client = self._client(url)
        try:
            stats = await client.system_stats()
            system = stats.get("system")
            if not isinstance(system, dict):
                return ProbeResult(
                    ok=False,
                    not_comfyui=True,
                    error=f"{url}/system_stats has no 'system' section: not ComfyUI",
                )
            remaining = await client.queue_remaining()
        except ComfyProtocolError as exc:
            # A 5xx is a server (or a proxy in front of it) in trouble, not a different program.
            wrong = exc.status is None or exc.status < 500
            return ProbeResult(ok=False, not_comfyui=wrong, error=exc.message)
        except ComfyError as exc:
            return ProbeResult(ok=False, error=exc.message)
        version = system.get("comfyui_version")
        return ProbeResult(
            ok=True, busy=remaining > 0, version=str(version) if version is not None else None
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
