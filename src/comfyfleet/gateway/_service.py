"""What the gateway's routes work with, built once in `serve` and passed in (no globals)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.assets import MediaResolver
from comfyfleet.comfy import ComfyClient, ComfyError
from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.gateway._settings import ServeSettings
from comfyfleet.jobs import JobStore
from comfyfleet.netguard import NetPolicy
from comfyfleet.storage import Storage
from comfyfleet.supervise import InstanceStatus
from comfyfleet.webhooks import DEFAULT_EVENTS

_FREE_TEXT_NAMES = frozenset({"text", "text_g", "text_l", "prompt", "negative_prompt"})
"""Inputs taken for prompts when no instance can say (their schemas are not known yet)."""


def _free_text_inputs(info: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """(class, input) of every multiline text input in `/object_info`: prompts, not names."""
    found = set()
    for class_type, spec in info.items():
        sections = (spec.get("input") or {}) if isinstance(spec, dict) else {}
        for section in ("required", "optional"):
            for name, declared in (sections.get(section) or {}).items():
                if not isinstance(declared, list | tuple) or len(declared) < 2:
                    continue
                kind, options = declared[0], declared[1]
                if kind == "STRING" and isinstance(options, dict) and options.get("multiline"):
                    found.add((str(class_type), str(name)))
    return frozenset(found)


def prompt_by_name(class_type: str, input_name: str) -> bool:
    """Free text, as far as an input's name tells: the rule when no schema is known."""
    return input_name in _FREE_TEXT_NAMES


class NodeTypes:
    """The node classes the instances know (`/object_info`), cached; refreshed when a graph names
    a class the cache does not have and the cache is older than `refresh_s` (new custom nodes).
    Also which inputs are free text (multiline strings): those may hold anything, while every
    other string input is a name that must not read as a path leaving its folder.

    One fetch at a time: `/object_info` is megabytes of JSON, and a burst of submissions that
    all find the cache empty (or all name the same new class) would otherwise each fetch and
    decode it, which starved a 200-job burst for seconds. Callers arriving during a fetch wait
    for that one."""

    def __init__(self, urls: Callable[[], list[str]], refresh_s: float = 10.0) -> None:
        self._urls = urls
        self._refresh_s = refresh_s
        self._known: frozenset[str] | None = None
        self._free_text: frozenset[tuple[str, str]] = frozenset()
        self._fetched_at = 0.0
        self._fetching: asyncio.Future[None] | None = None

    async def known(self, wanted: set[str]) -> frozenset[str] | None:
        """The known classes, or None when no instance can be asked (skip the check then)."""
        stale = time.monotonic() - self._fetched_at > self._refresh_s
        if self._known is None or (stale and not wanted <= self._known):
            await self._fetch_once()
        return self._known

    async def _fetch_once(self) -> None:
        """Join the fetch under way, or start one; shielded, so a caller that goes away does
        not cancel it for the others."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, fetch: asyncio.Future[None]) -> None:
        self._fetching = None
        if not fetch.cancelled():
            fetch.exception()  # retrieved: each waiter has it raised already

    def free_text(self, class_type: str, input_name: str) -> bool:
        if self._known is None or class_type not in self._known:
            return prompt_by_name(class_type, input_name)
        return (class_type, input_name) in self._free_text

    async def _fetch(self) -> None:
        for url in self._urls():
            try:
                async with ComfyClient(url, timeout=10) as client:
                    info = await client.object_info()
            except ComfyError:
                continue
            self._known = frozenset(info)
            self._free_text = _free_text_inputs(info)
            self._fetched_at = time.monotonic()
            return


@dataclass
class Service:
    """What the routes work with: the store, the settings, and hooks into the rest of `serve`
    (each optional, so the app also runs in front of a store alone, as the unit tests do)."""

    store: JobStore
    output_dir: Path
    settings: ServeSettings = field(default_factory=ServeSettings)  # type: ignore[arg-type]
    instances: Callable[[], list[InstanceStatus]] = list
    host: str = "127.0.0.1"
    notify: Callable[[], None] = lambda: None
    dispatch: Callable[[], Awaitable[None]] | None = None
    """Fill idle instances now (the dispatcher in this process); None: `notify` only."""
    node_types: NodeTypes | None = None
    media: MediaResolver | None = None
    """Turns URLs, base64 and asset ids in a graph into stored input files."""
    webhook_events: tuple[str, ...] = DEFAULT_EVENTS
    storage_names: frozenset[str] = frozenset({"default"})
    previews: PreviewHub = field(default_factory=PreviewHub)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server stops: open event streams and sockets end instead of holding it."""
    net_policy: NetPolicy = field(default_factory=NetPolicy)
    """Which non-public addresses URLs in a job (model sources) may point at: none by default."""
    storage: Storage | None = None
    """The default output store: its URLs are signed again when a job is read."""
    idempotency_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Keys the HMAC that turns an Idempotency-Key into a job id; `serve` passes the one kept
    in the workspace so that retries map to the same job across restarts."""

    def serving_urls(self) -> list[str]:
        return [
            f"http://{self.host}:{s.port}"
            for s in self.instances()
            if str(s.state) in ("ready", "busy")
        ]
