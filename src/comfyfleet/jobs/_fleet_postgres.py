"""The fleet registry in the job store's PostgreSQL database, through a pool of its own.

Its tables come from the job store's migration `0003_fleet_registry.sql`. An agent's report is
one round trip (agent, every instance as one JSON array, removal of the instances it no longer
has, in one transaction), so heartbeats from many agents stay cheap. A lost connection is tried
once more, as in the job store: every write here is an upsert or a delete, so a repeat changes
nothing. All SQL is in `sql/postgres/fleet.sql`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg.rows import DictRow

from comfyfleet.db import Connection, Database, connect, load_queries, redact, script
from comfyfleet.jobs._fleet import AgentRecord, Fleet, InstanceRecord, NodeSchemas, StoredFrame
from comfyfleet.jobs._fleet_sqlite import (
    agent_from_row,
    agent_row,
    frame_from_row,
    frame_row,
    instance_from_row,
    instance_row,
)
from comfyfleet.jobs._model import JobStoreError

BEGIN, COMMIT = "BEGIN", "COMMIT"


class PostgresRegistry:
    """Open with :meth:`open`."""

    def __init__(self, url: str, queries: dict[str, str]) -> None:
        self.url = redact(url)
        self._q = queries
        self._db = Database(url, JobStoreError, "fleet registry")

    @classmethod
    async def open(cls, url: str) -> PostgresRegistry:
        queries = load_queries("comfyfleet.jobs", folder="sql/postgres", file_name="fleet.sql")
        conn = await connect(url, JobStoreError, "fleet registry")
        try:
            row = await (await conn.execute(queries["has_tables"])).fetchone()
        except psycopg.Error as exc:
            raise JobStoreError(f"cannot open the fleet registry in {redact(url)}: {exc}") from exc
        finally:
            await conn.close()
        if row is None or row["n"] != 3:
            raise JobStoreError(
                f"the database {redact(url)} has no fleet registry tables",
                hint="open it with this comfyfleet's job store first (that migrates it)",
            )
        registry = cls(url, queries)
        await registry._db.open()
        return registry

    async def report(
        self,
        agent: AgentRecord,
        instances: Sequence[InstanceRecord],
        *,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        rows = [instance_row(each, agent.id, now) for each in instances]
        params = agent_row(agent, now) | {
            "rows": json.dumps(rows),
            "agent": agent.id,
            "indexes": [row["idx"] for row in rows],
        }
        statements = [
            BEGIN,
            self._q["put_agent"],
            self._q["put_instances"],
            self._q["delete_other_instances"],
            COMMIT,
        ]
        await self._script(statements, params)

    async def leave(self, agent_id: str) -> None:
        statements = [
            BEGIN,
            self._q["delete_agent"],
            self._q["delete_agent_instances"],
            COMMIT,
        ]
        await self._script(statements, {"id": agent_id})

    async def fleet(self, *, timeout_s: float, now: float | None = None) -> Fleet:
        now = time.time() if now is None else now

        async def read(conn: Connection) -> tuple[list[DictRow], list[DictRow]]:
            async with conn.transaction():  # one snapshot of both tables
                agents = await (await conn.execute(self._q["agents"])).fetchall()
                instances = await (await conn.execute(self._q["instances"])).fetchall()
            return agents, instances

        agent_rows, instance_rows = await self._db.run(read)
        agents = [agent_from_row(dict(r)) for r in agent_rows]
        alive = frozenset(a.id for a in agents if now - a.heartbeat_at <= timeout_s)
        instances = tuple(instance_from_row(dict(r)) for r in instance_rows)
        return Fleet(tuple(agents), instances, alive)

    async def put_schemas(self, schemas: NodeSchemas) -> None:
        params = {"digest": schemas.digest, "body": schemas.to_json()}
        await self._script([self._q["insert_schemas"]], params)

    async def schemas(self, digests: Collection[str]) -> dict[str, NodeSchemas]:
        if not digests:
            return {}
        rows = await self._script([self._q["get_schemas"]], {"digests": sorted(set(digests))})
        return {row["digest"]: NodeSchemas.from_json(row["body"]) for row in rows}

    async def prune(self, *, older_than: float, frames_before: float | None = None) -> int:
        async def prune(conn: Connection) -> int:
            params = {"older_than": older_than}
            async with conn.transaction():
                removed = (await conn.execute(self._q["prune_agents"], params)).rowcount
                await conn.execute(self._q["prune_instances"])
                await conn.execute(
                    self._q["prune_frames"],
                    {"before": older_than if frames_before is None else frames_before},
                )
                await conn.execute(self._q["prune_schemas"])
            return int(removed)

        return await self._db.run(prune)

    async def prune_previews(
        self, before: float, *, keep: Collection[str] = (), dry_run: bool = False
    ) -> tuple[int, int]:
        params = {"before": before, "keep": sorted(set(keep))}
        query = "count_old_frames" if dry_run else "delete_old_frames"
        (row,) = await self._script([self._q[query]], params)
        return int(row["n"]), int(row["bytes"])

    async def put_preview(self, frame: StoredFrame) -> None:
        async def put(conn: Connection) -> None:
            await conn.execute(self._q["put_frame"], frame_row(frame))

        await self._db.run(put)

    async def previews(self, job_ids: Collection[str], *, since: float) -> list[StoredFrame]:
        if not job_ids:
            return []

        async def read(conn: Connection) -> list[DictRow]:
            params = {"job_ids": list(job_ids), "since": since}
            return await (await conn.execute(self._q["get_frames"], params)).fetchall()

        return [frame_from_row(dict(row)) for row in await self._db.run(read)]

    async def lead(self, name: str, holder: str, *, ttl_s: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        params = {"name": name, "holder": holder, "expires_at": now + ttl_s, "now": now}
        rows = await self._script([self._q["lead"], self._q["lease_holder"]], params)
        return bool(rows) and rows[0]["holder"] == holder

    async def resign(self, name: str, holder: str) -> None:
        await self._script([self._q["resign_lease"]], {"name": name, "holder": holder})

    async def close(self) -> None:
        await self._db.close()

    async def _script(self, statements: list[str], params: dict[str, Any]) -> list[DictRow]:
        async def run(conn: Connection) -> list[DictRow]:
            return await script(conn, statements, params)

        return await self._db.run(run)
