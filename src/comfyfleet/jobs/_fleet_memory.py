"""The fleet registry in memory: one process (tests, `memory://` stores)."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import replace

from comfyfleet.jobs._fleet import AgentRecord, Fleet, InstanceRecord, NodeSchemas, StoredFrame


class MemoryRegistry:
    def __init__(self) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._instances: dict[tuple[str, int], InstanceRecord] = {}
        self._schemas: dict[str, NodeSchemas] = {}
        self._frames: dict[str, StoredFrame] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    async def report(
        self,
        agent: AgentRecord,
        instances: Sequence[InstanceRecord],
        *,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        self._agents[agent.id] = replace(agent, heartbeat_at=now)
        listed = {each.index for each in instances}
        for key in [k for k in self._instances if k[0] == agent.id and k[1] not in listed]:
            del self._instances[key]
        for each in instances:
            key = (agent.id, each.index)
            old = self._instances.get(key)
            models = each.models
            if old is not None and old.models_digest == each.models_digest:
                models = old.models  # as the SQL stores do: no rewrite of an unchanged list
            self._instances[key] = replace(each, agent=agent.id, models=models, updated_at=now)

    async def leave(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)
        for key in [k for k in self._instances if k[0] == agent_id]:
            del self._instances[key]

    async def fleet(self, *, timeout_s: float, now: float | None = None) -> Fleet:
        now = time.time() if now is None else now
        agents = tuple(sorted(self._agents.values(), key=lambda a: a.id))
        alive = frozenset(a.id for a in agents if now - a.heartbeat_at <= timeout_s)
        instances = tuple(self._instances[k] for k in sorted(self._instances))
        return Fleet(agents, instances, alive)

    async def put_schemas(self, schemas: NodeSchemas) -> None:
        self._schemas.setdefault(schemas.digest, schemas)

    async def schemas(self, digests: Collection[str]) -> dict[str, NodeSchemas]:
        return {d: self._schemas[d] for d in digests if d in self._schemas}

    async def prune(self, *, older_than: float, frames_before: float | None = None) -> int:
        gone = [a.id for a in self._agents.values() if a.heartbeat_at < older_than]
        for agent_id in gone:
            await self.leave(agent_id)
        cutoff = older_than if frames_before is None else frames_before
        for job_id in [j for j, f in self._frames.items() if f.at < cutoff]:
            del self._frames[job_id]
        named = {i.schema_digest for i in self._instances.values()}
        for digest in [d for d in self._schemas if d not in named]:
            del self._schemas[digest]
        return len(gone)

    async def prune_previews(
        self, before: float, *, keep: Collection[str] = (), dry_run: bool = False
    ) -> tuple[int, int]:
        kept = set(keep)
        old = [f for f in self._frames.values() if f.at < before and f.job_id not in kept]
        if not dry_run:
            for frame in old:
                del self._frames[frame.job_id]
        return len(old), sum(len(frame.data) for frame in old)

    async def put_preview(self, frame: StoredFrame) -> None:
        self._frames[frame.job_id] = frame

    async def previews(self, job_ids: Collection[str], *, since: float) -> list[StoredFrame]:
        found = (self._frames.get(job_id) for job_id in job_ids)
        return [f for f in found if f is not None and f.at >= since]

    async def lead(self, name: str, holder: str, *, ttl_s: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        current = self._leases.get(name)
        if current is None or current[0] == holder or current[1] < now:
            self._leases[name] = (holder, now + ttl_s)
            return True
        return False

    async def resign(self, name: str, holder: str) -> None:
        if self._leases.get(name, ("", 0.0))[0] == holder:
            del self._leases[name]

    async def close(self) -> None:
        pass
