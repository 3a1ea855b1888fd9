"""What the queued and running jobs need: their ids (their output folders, their events, their
preview frames) and the stored inputs their graphs name.

A graph names a stored input by its path under the input folder (`comfyfleet-assets/<sha256>.png`,
which is what submitting rewrote `asset:<id>`, URLs and base64 into, and what ComfyUI clients
send after an upload) or, where nothing rewrote it, as `asset:<id>`. Every string of the graph is
looked at, not only the loaders' inputs: a custom loader this table does not know still keeps
its file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from comfyfleet.assets import ASSETS_FOLDER
from comfyfleet.jobs import JobStore

_NAMED = re.compile(
    rf"(?:{re.escape(ASSETS_FOLDER)}/|asset:(?:sha256:)?)([0-9a-fA-F]{{64}})(?![0-9a-fA-F])"
)
PAGE = 500


@dataclass(frozen=True)
class Live:
    jobs: frozenset[str]
    """Ids of the queued and running jobs."""
    assets: frozenset[str]
    """Ids (SHA-256, lower case) of the stored inputs they name."""


async def read_live(store: JobStore) -> Live:
    """Every queued and running job, page by page (a job that stays live while the pages are
    read is seen; one queued after the last page names only inputs its submit just used)."""
    jobs: set[str] = set()
    assets: set[str] = set()
    after = 0
    while page := await store.live_jobs(after=after, limit=PAGE):
        for job in page:
            jobs.add(job.id)
            assets.update(named_assets(job.workflow))
        after = page[-1].seq
    return Live(frozenset(jobs), frozenset(assets))


def named_assets(workflow: Any) -> set[str]:
    """The ids of the stored inputs a graph names, anywhere in it."""
    return {match[1].lower() for text in _strings(workflow) for match in _NAMED.finditer(text)}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
