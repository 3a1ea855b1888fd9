"""Active health probes: an instance is ready when ComfyUI answers `GET /system_stats`, and busy
when its queue is not empty. A process that exists but does not answer is not ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from comfyfleet.comfy import ComfyClient, ComfyError


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    busy: bool = False
    version: str | None = None
    error: str | None = None


class Prober(Protocol):
    async def probe(self, host: str, port: int) -> ProbeResult: ...

    async def aclose(self) -> None: ...


class HttpProber:
    """Probes over HTTP, one keep-alive client per instance address."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._clients: dict[tuple[str, int], ComfyClient] = {}

    def _client(self, host: str, port: int) -> ComfyClient:
        key = (host, port)
        if key not in self._clients:
            shown = f"[{host}]" if ":" in host else host
            self._clients[key] = ComfyClient(f"http://{shown}:{port}", timeout=self._timeout)
        return self._clients[key]

    async def probe(self, host: str, port: int) -> ProbeResult:
        client = self._client(host, port)
        try:
            stats = await client.system_stats()
            remaining = await client.queue_remaining()
        except ComfyError as exc:
            return ProbeResult(ok=False, error=exc.message)
        system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        return ProbeResult(
            ok=True, busy=remaining > 0, version=str(version) if version is not None else None
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
