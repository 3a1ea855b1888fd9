"""Rewriting a submitted graph so that ComfyUI reads stored assets instead of URLs and base64.

`resolve_media` finds every media value (see `_values`), fetches or stores each distinct one once
(the same URL or the same bytes twice in a graph is one fetch), a few at a time, and returns a new
graph (the submitted one is not changed) with the list of what was rewritten. The first failure
cancels the rest and is raised naming the node, its class and the input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from comfyfleet.assets._errors import URL_REFUSED, MediaInputError
from comfyfleet.assets._fetch import UrlFetcher
from comfyfleet.assets._store import AssetStore
from comfyfleet.assets._values import LOADER_INPUTS, MediaRef, Source, parse_value


class MediaResolver(Protocol):
    """Turns media into the name a ComfyUI loader reads (relative to the input folder)."""

    async def url(self, url: str) -> str: ...

    async def data(self, data: bytes) -> str: ...

    async def asset(self, asset_id: str) -> str: ...


@dataclass(frozen=True)
class Rewrite:
    """One input value replaced: where, what it was (shortened), and what ComfyUI now reads."""

    node_id: str
    class_type: str
    input_name: str
    source: str
    original: str
    name: str


@dataclass(frozen=True)
class _Use:
    node_id: str
    class_type: str
    input_name: str
    ref: MediaRef


class AssetResolver:
    """The real :class:`MediaResolver`: URLs through `fetcher` into `store`, bytes into `store`."""

    def __init__(
        self,
        store: AssetStore,
        fetcher: UrlFetcher | None = None,
        *,
        max_inline_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.max_inline_bytes = max_inline_bytes

    async def url(self, url: str) -> str:
        if self.fetcher is None:
            raise MediaInputError(URL_REFUSED, "this server does not fetch URLs")
        asset, _created = await self.fetcher.fetch_into(self.store, url)
        return asset.comfy_name

    async def data(self, data: bytes) -> str:
        asset, _created = await self.store.add_bytes(data, max_bytes=self.max_inline_bytes)
        return asset.comfy_name

    async def asset(self, asset_id: str) -> str:
        return self.store.use(asset_id).comfy_name  # a use: retention keeps it a while longer


def _node_uses(node_id: str, node: Any, loaders: Mapping[str, frozenset[str]]) -> list[_Use]:
    if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
        return []
    class_type = str(node.get("class_type"))
    loader_inputs = loaders.get(class_type, frozenset())
    uses = []
    for name, value in node["inputs"].items():
        if not isinstance(value, str):
            continue  # links are lists, numbers are numbers
        try:
            ref = parse_value(value, loader=name in loader_inputs)
        except MediaInputError as exc:
            raise exc.at(str(node_id), class_type, str(name)) from None
        if ref is not None:
            uses.append(_Use(str(node_id), class_type, str(name), ref))
    return uses


async def _resolve_one(resolver: MediaResolver, ref: MediaRef) -> str:
    if ref.source is Source.URL:
        return await resolver.url(ref.key)
    if ref.source is Source.ASSET:
        return await resolver.asset(ref.key)
    assert ref.data is not None
    return await resolver.data(ref.data)


async def _resolve_all(
    uses: list[_Use], resolver: MediaResolver, concurrency: int
) -> dict[tuple[str, str], str]:
    firsts: dict[tuple[str, str], _Use] = {}
    for use in uses:
        firsts.setdefault(use.ref.dedup_key, use)
    names: dict[tuple[str, str], str] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(key: tuple[str, str], use: _Use) -> None:
        async with gate:
            try:
                names[key] = await _resolve_one(resolver, use.ref)
            except MediaInputError as exc:
                raise exc.at(use.node_id, use.class_type, use.input_name) from None

    try:
        async with asyncio.TaskGroup() as group:
            for key, use in firsts.items():
                group.create_task(one(key, use))
    except BaseExceptionGroup as failed:
        errors = [e for e in failed.exceptions if isinstance(e, MediaInputError)]
        if errors and len(errors) == len(failed.exceptions):
            raise errors[0] from None
        raise
    return names


async def resolve_media(
    workflow: Mapping[str, Any],
    resolver: MediaResolver,
    *,
    loaders: Mapping[str, frozenset[str]] = LOADER_INPUTS,
    concurrency: int = 4,
) -> tuple[dict[str, Any], list[Rewrite]]:
    """A copy of `workflow` with every media value replaced by its stored name, and the list of
    replacements. Raises :class:`MediaInputError` naming the node, class and input."""
    uses = [use for node_id, node in workflow.items() for use in _node_uses(node_id, node, loaders)]
    result = dict(workflow)
    if not uses:
        return result, []
    names = await _resolve_all(uses, resolver, concurrency)
    copied: set[str] = set()
    rewrites: list[Rewrite] = []
    for use in uses:
        name = names[use.ref.dedup_key]
        if use.node_id not in copied:
            node = dict(result[use.node_id])
            node["inputs"] = dict(node["inputs"])
            result[use.node_id] = node
            copied.add(use.node_id)
        result[use.node_id]["inputs"][use.input_name] = name
        rewrites.append(
            Rewrite(
                use.node_id,
                use.class_type,
                use.input_name,
                str(use.ref.source),
                use.ref.summary,
                name,
            )
        )
    return result, rewrites
