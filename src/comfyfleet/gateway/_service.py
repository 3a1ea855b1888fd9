"""What the gateway's routes work with, built once in `serve` and passed in (no globals)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.comfy import ComfyClient, ComfyError
from comfyfleet.jobs import JobStore
from comfyfleet.supervise import InstanceStatus


@dataclass(frozen=True)
class GatewaySettings:
    max_body_bytes: int = 20 * 1024 * 1024
    max_queued: int = 1000
    max_attempts: int = 3
    max_wait_s: float = 600.0
    retry_after_s: int = 5


class NodeTypes:
    """The node classes the instances know (`/object_info`), cached; refreshed when a graph names
    a class the cache does not have and the cache is older than `refresh_s` (new custom nodes)."""

    def __init__(self, urls: Callable[[], list[str]], refresh_s: float = 10.0) -> None:
        self._urls = urls
        self._refresh_s = refresh_s
        self._known: frozenset[str] | None = None
        self._fetched_at = 0.0

    async def known(self, wanted: set[str]) -> frozenset[str] | None:
        """The known classes, or None when no instance can be asked (skip the check then)."""
        stale = time.monotonic() - self._fetched_at > self._refresh_s
        if self._known is None or (stale and not wanted <= self._known):
            await self._fetch()
        return self._known

    async def _fetch(self) -> None:
        for url in self._urls():
            try:
                async with ComfyClient(url, timeout=10) as client:
                    info = await client.object_info()
            except ComfyError:
                continue
            self._known = frozenset(info)
            self._fetched_at = time.monotonic()
            return


@dataclass
class Service:
    store: JobStore
    output_dir: Path
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    instances: Callable[[], list[InstanceStatus]] = list
    host: str = "127.0.0.1"
    notify: Callable[[], None] = lambda: None
    dispatch: Callable[[], Awaitable[None]] | None = None
    """Fill idle instances now (the dispatcher in this process); None: `notify` only."""
    node_types: NodeTypes | None = None

    def serving_urls(self) -> list[str]:
        return [
            f"http://{self.host}:{s.port}"
            for s in self.instances()
            if str(s.state) in ("ready", "busy")
        ]
