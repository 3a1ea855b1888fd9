"""What the gateway's routes work with, built once in `serve` and passed in (no globals)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.assets import MediaResolver
from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.gateway._settings import ServeSettings
from comfyfleet.gateway._stream_slots import StreamSlots
from comfyfleet.jobs import Fleet, JobStore, MemoryRegistry, NodeSchemas, Registry
from comfyfleet.models import LOADER_INPUTS
from comfyfleet.netguard import NetPolicy
from comfyfleet.storage import Storage
from comfyfleet.webhooks import DEFAULT_EVENTS

_FREE_TEXT_NAMES = frozenset({"text", "text_g", "text_l", "prompt", "negative_prompt"})
"""Inputs taken for prompts when no instance can say (their schemas are not known yet)."""


def prompt_by_name(class_type: str, input_name: str) -> bool:
    """Free text, as far as an input's name tells: the rule when no schema is known."""
    return input_name in _FREE_TEXT_NAMES


class NodeTypes:
    """The node classes the serving instances know, as their agents registered them (the
    instances' `/object_info`, reduced to class names and free-text inputs), cached; read again
    when a graph names a class the cache does not have and the cache is older than `refresh_s`
    (an instance with new custom nodes joined). Schemas are cached by digest, so a fleet of
    identical instances costs one read of one schema.

    Free text (multiline strings) may hold anything, while every other string input is a name
    that must not read as a path leaving its folder. One read at a time: a burst of submissions
    that all find the cache empty waits for the same read instead of each making its own."""

    def __init__(
        self, registry: Registry, *, timeout_s: float = 15.0, refresh_s: float = 10.0
    ) -> None:
        self._registry = registry
        self._timeout_s = timeout_s
        self._refresh_s = refresh_s
        self._by_digest: dict[str, NodeSchemas] = {}
        self._known: frozenset[str] | None = None
        self._free_text: frozenset[tuple[str, str]] = frozenset()
        self._info: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._fetching: asyncio.Future[None] | None = None

    async def known(self, wanted: set[str]) -> frozenset[str] | None:
        """The known classes, or None when no serving instance has registered its schemas
        (skip the check then)."""
        stale = time.monotonic() - self._fetched_at > self._refresh_s
        if self._known is None or (stale and not wanted <= self._known):
            await self._fetch_once()
        return self._known

    async def object_info(self) -> dict[str, Any]:
        """The node definitions of every serving instance, merged (a class that several
        instances have is described by the first): what `/object_info` answers for the fleet.
        Read again once older than `refresh_s`."""
        if self._known is None or time.monotonic() - self._fetched_at > self._refresh_s:
            await self._fetch_once()
        return self._info

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
        fleet = await self._registry.fleet(timeout_s=self._timeout_s)
        digests = {i.schema_digest for i in fleet.serving() if i.schema_digest is not None}
        missing = digests - set(self._by_digest)
        if missing:
            self._by_digest |= await self._registry.schemas(missing)
        found = [self._by_digest[d] for d in digests if d in self._by_digest]
        if not found:
            return
        self._known = frozenset().union(*(s.classes for s in found))
        self._free_text = frozenset().union(*(s.free_text for s in found))
        merged: dict[str, Any] = {}
        for schemas in found:
            for class_type, spec in schemas.info.items():
                merged.setdefault(class_type, spec)
        self._info = merged
        self._fetched_at = time.monotonic()


@dataclass
class Service:
    """What the routes work with: the store, the settings, and hooks into the rest of `serve`
    (each optional, so the app also runs in front of a store alone, as the unit tests do)."""

    store: JobStore
    output_dir: Path
    settings: ServeSettings = field(default_factory=ServeSettings)  # type: ignore[arg-type]
    registry: Registry = field(default_factory=MemoryRegistry)
    """Where agents register their instances: every view of the fleet comes from it."""
    notify: Callable[[], None] = lambda: None
    dispatch: Callable[[], Awaitable[None]] | None = None
    """Fill idle instances now (the dispatcher in this process); None: `notify` only."""
    wake_commands: Callable[[], None] = lambda: None
    """An instance command is in the store: the agent in this process (if any) takes it now
    rather than at its next poll."""
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
    loaders: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: LOADER_INPUTS)
    """Loader classes and their file inputs: what a job's `models` are read from (routing)."""
    idempotency_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Keys the HMAC that turns an Idempotency-Key into a job id; `serve` passes the one kept
    in the workspace so that retries map to the same job across restarts."""

    streams: StreamSlots = field(init=False)
    """The open event streams, bounded by `settings.max_event_streams` (in all, and per key)."""

    def __post_init__(self) -> None:
        self.streams = StreamSlots(
            self.settings.max_event_streams,
            self.settings.max_event_streams_per_key,
            self.settings.retry_after_s,
        )

    async def fleet(self) -> Fleet:
        return await self.registry.fleet(timeout_s=self.settings.agent_timeout_s)
