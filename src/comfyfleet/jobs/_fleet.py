"""The fleet registry: which agents are alive, which instances they serve, and what those hold.

Gateways and agents talk only through the store, in every mode. An agent reports itself and its
instances every few seconds (`report`, one transaction); a gateway reads the whole fleet back
(`fleet`) for `/ready`, `/v1/instances` and the node schemas it validates graphs with. An agent
whose last report is older than the timeout the reader passes counts as gone: its instances are
listed, but none of them is serving.

Reports are frequent, so they stay cheap: an instance's model files and node schemas are big and
rarely change, so each travels with a digest, and a backend rewrites the file list only when
the digest differs from the stored one. Node schemas are stored once per digest (`put_schemas`)
and instances point at theirs.

Preview frames cross processes here too (`put_preview` / `previews`): one row per job, the
newest frame only, dropped after a short time, so the table stays as small as the number of
jobs running right now.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

SERVING_STATES = frozenset({"ready", "busy"})


def digest_of(value: Any) -> str:
    """A short stable digest of JSON-able data (sorted keys): equal data, equal digest."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class NodeSchemas:
    """An instance's `/object_info`: whole (`info`, what the ComfyUI API's `/object_info` and
    its validation serve from), and what the gateway checks every graph with, taken out of it:
    the node classes, and the (class, input) pairs that are free text (multiline strings:
    prompts, which may hold anything, while every other string input is a name that must not
    read as a path)."""

    classes: frozenset[str]
    free_text: frozenset[tuple[str, str]]
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def digest(self) -> str:
        return digest_of([sorted(self.classes), sorted(self.free_text), self.info])

    @classmethod
    def from_object_info(cls, info: Mapping[str, Any]) -> NodeSchemas:
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
        return cls(frozenset(str(c) for c in info), frozenset(found), dict(info))

    def to_json(self) -> str:
        return json.dumps(
            {
                "classes": sorted(self.classes),
                "free_text": sorted(self.free_text),
                "info": self.info,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> NodeSchemas:
        data = json.loads(text)
        return cls(
            frozenset(data["classes"]),
            frozenset((c, i) for c, i in data["free_text"]),
            data.get("info") or {},
        )


@dataclass(frozen=True)
class AgentRecord:
    """One agent process. `heartbeat_at` is stamped by the store when the agent reports."""

    id: str
    host: str
    version: str
    started_at: float
    heartbeat_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InstanceRecord:
    """One ComfyUI instance as its agent reported it.

    `base_url` is the address the agent reaches it at (often loopback: only that agent talks to
    it). `models` lists the model files on the agent's disk by folder type, `models_digest`
    their digest (`digest_of(models)`); `loaded_models` what the instance ran its last job with
    (`folder_type/name`, as jobs name them); `schema_digest` names the instance's NodeSchemas (None
    until the agent has read them). `details` holds what the supervisor knows besides (pid,
    port, restarts, reason, ...), shown as it is."""

    agent: str
    index: int
    base_url: str
    state: str
    device: str = ""
    vram_used: int | None = None
    vram_total: int | None = None
    free_slots: int = 0
    models: Mapping[str, Sequence[str]] = field(default_factory=dict)
    models_digest: str = ""
    loaded_models: tuple[str, ...] = ()
    schema_digest: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = {k: list(v) for k, v in self.models.items()}
        data["details"] = dict(self.details)
        data["loaded_models"] = list(self.loaded_models)
        return data


@dataclass(frozen=True)
class Fleet:
    """The registry as one reader saw it, with the timeout that reader applied."""

    agents: tuple[AgentRecord, ...]
    instances: tuple[InstanceRecord, ...]
    alive: frozenset[str]
    """Ids of the agents whose last report is within the timeout."""

    def serving(self) -> list[InstanceRecord]:
        """Instances that can take jobs: their agent alive, their state ready or busy."""
        return [i for i in self.instances if i.agent in self.alive and i.state in SERVING_STATES]

    def to_dict(self) -> dict[str, Any]:
        agents = {a.id: a for a in self.agents}
        listed = []
        for each in self.instances:
            data = dict(each.details) | each.to_dict()  # pid, port, ... beside the record
            del data["details"]
            agent = agents.get(each.agent)
            data["agent"] = (agent.to_dict() if agent else {"id": each.agent}) | {
                "alive": each.agent in self.alive
            }
            if each.agent not in self.alive:
                data["state"] = "gone"
            listed.append(data)
        return {
            "agents": [a.to_dict() | {"alive": a.id in self.alive} for a in self.agents],
            "instances": listed,
        }


@dataclass(frozen=True)
class StoredFrame:
    """The newest preview frame of a running job, as the agent running it stored it.

    `seq` grows with every frame of the job that agent stores, so a reader that remembers the
    last (worker, seq) it saw passes each frame on once."""

    job_id: str
    worker: str
    seq: int
    image_format: str
    data: bytes
    at: float


class Registry(Protocol):
    """Where agents say what they run and gateways read it. Every call is one round trip at most
    on a network store; `now` is `time.time()` unless given."""

    async def report(
        self,
        agent: AgentRecord,
        instances: Sequence[InstanceRecord],
        *,
        now: float | None = None,
    ) -> None:
        """Upsert the agent (its heartbeat now) and its instances; instances of the agent not in
        `instances` are removed. A model list is rewritten only when its digest changed."""
        ...

    async def leave(self, agent_id: str) -> None:
        """The agent stops: remove it and its instances now rather than after the timeout."""
        ...

    async def fleet(self, *, timeout_s: float, now: float | None = None) -> Fleet:
        """Every agent and instance; agents silent for more than `timeout_s` are not alive."""
        ...

    async def put_schemas(self, schemas: NodeSchemas) -> None:
        """Store node schemas under their digest (nothing happens when they are stored)."""
        ...

    async def schemas(self, digests: Collection[str]) -> dict[str, NodeSchemas]:
        """The stored schemas among `digests`, by digest."""
        ...

    async def prune(self, *, older_than: float, frames_before: float | None = None) -> int:
        """Remove agents (and their instances) silent since before `older_than`, preview
        frames stored before `frames_before` (default: `older_than`), and schemas no instance
        names; returns the agents removed."""
        ...

    async def prune_previews(
        self, before: float, *, keep: Collection[str] = (), dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove the preview frames stored before `before`, except those of the jobs in `keep`
        (the live ones): (how many, their bytes). With `dry_run`, only count them."""
        ...

    async def put_preview(self, frame: StoredFrame) -> None:
        """Keep `frame` as its job's newest one (replacing the one before)."""
        ...

    async def previews(self, job_ids: Collection[str], *, since: float) -> list[StoredFrame]:
        """The newest frame of each of `job_ids` stored at or after `since`."""
        ...

    async def lead(self, name: str, holder: str, *, ttl_s: float, now: float | None = None) -> bool:
        """Take or keep the lease `name` for `ttl_s`: True when `holder` has it now (it was free,
        expired, or already `holder`'s). For work exactly one process must do (webhooks)."""
        ...

    async def resign(self, name: str, holder: str) -> None:
        """Give the lease `name` up now if `holder` has it (a clean stop: no wait for expiry)."""
        ...

    async def close(self) -> None: ...
