"""The fleet registry in the job store's SQLite file, through a connection of its own.

Its tables come from the job store's migration `0005_fleet_registry.sql`, so the job store must
have opened the file once (it migrates on open). Each change is one `BEGIN IMMEDIATE`
transaction, as in the job store; the calls run on the event loop's thread with no `await`
inside a transaction. All SQL is in `sql/fleet.sql`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from comfyfleet.db import immediate, load_queries, opening
from comfyfleet.jobs._fleet import AgentRecord, Fleet, InstanceRecord, NodeSchemas, StoredFrame
from comfyfleet.jobs._model import JobStoreError


class SqliteRegistry:
    """Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, queries: dict[str, str]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._q = queries

    @classmethod
    def open(cls, path: Path) -> SqliteRegistry:
        queries = load_queries("comfyfleet.jobs", file_name="fleet.sql")
        if not path.is_file():
            raise JobStoreError(
                f"no job store at {path} to hold the fleet registry",
                hint="open the SQLite job store first: it creates the file and the tables",
            )
        with opening(path, queries["pragmas"]) as conn:
            if conn.execute(queries["has_tables"]).fetchone()[0] != 3:
                raise JobStoreError(
                    f"the job store {path} has no fleet registry tables",
                    hint="open it with this comfyfleet's job store first (that migrates it)",
                )
        return cls(conn, queries)

    async def report(
        self,
        agent: AgentRecord,
        instances: Sequence[InstanceRecord],
        *,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        rows = [instance_row(each, agent.id, now) for each in instances]
        with self._write() as conn:
            conn.execute(self._q["put_agent"], agent_row(agent, now))
            listed = {row["idx"] for row in rows}
            for (idx,) in conn.execute(self._q["instance_indexes"], {"agent": agent.id}):
                if idx not in listed:
                    conn.execute(self._q["delete_instance"], {"agent": agent.id, "idx": idx})
            conn.executemany(self._q["insert_instance"], rows)
            conn.executemany(self._q["update_instance"], rows)

    async def leave(self, agent_id: str) -> None:
        with self._write() as conn:
            conn.execute(self._q["delete_agent"], {"id": agent_id})
            conn.execute(self._q["delete_agent_instances"], {"id": agent_id})

    async def fleet(self, *, timeout_s: float, now: float | None = None) -> Fleet:
        now = time.time() if now is None else now
        db = self._db()  # reads without the write lock: /ready must not queue behind claims
        agents = [agent_from_row(dict(r)) for r in db.execute(self._q["agents"])]
        instances = [instance_from_row(dict(r)) for r in db.execute(self._q["instances"])]
        alive = frozenset(a.id for a in agents if now - a.heartbeat_at <= timeout_s)
        return Fleet(tuple(agents), tuple(instances), alive)

    async def put_schemas(self, schemas: NodeSchemas) -> None:
        with self._write() as conn:
            conn.execute(
                self._q["insert_schemas"], {"digest": schemas.digest, "body": schemas.to_json()}
            )

    async def schemas(self, digests: Collection[str]) -> dict[str, NodeSchemas]:
        found = {}
        for digest in set(digests):
            row = self._db().execute(self._q["get_schemas"], {"digest": digest}).fetchone()
            if row is not None:
                found[digest] = NodeSchemas.from_json(row["body"])
        return found

    async def prune(self, *, older_than: float, frames_before: float | None = None) -> int:
        params = {"older_than": older_than}
        with self._write() as conn:
            removed = conn.execute(self._q["prune_agents"], params).rowcount
            conn.execute(self._q["prune_instances"])
            conn.execute(
                self._q["prune_frames"],
                {"before": older_than if frames_before is None else frames_before},
            )
            conn.execute(self._q["prune_schemas"])
        return int(removed)

    async def prune_previews(
        self, before: float, *, keep: Collection[str] = (), dry_run: bool = False
    ) -> tuple[int, int]:
        params = {"before": before, "keep": json.dumps(sorted(set(keep)))}
        with self._write() as conn:
            row = conn.execute(self._q["count_old_frames"], params).fetchone()
            if not dry_run:
                conn.execute(self._q["delete_old_frames"], params)
        return int(row["n"]), int(row["bytes"])

    async def put_preview(self, frame: StoredFrame) -> None:
        with self._write() as conn:
            conn.execute(self._q["put_frame"], frame_row(frame))

    async def previews(self, job_ids: Collection[str], *, since: float) -> list[StoredFrame]:
        found = []
        for job_id in job_ids:
            params = {"job_id": job_id, "since": since}
            row = self._db().execute(self._q["get_frame"], params).fetchone()
            if row is not None:
                found.append(frame_from_row(dict(row)))
        return found

    async def lead(self, name: str, holder: str, *, ttl_s: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        params = {"name": name, "holder": holder, "expires_at": now + ttl_s, "now": now}
        with self._write() as conn:
            conn.execute(self._q["insert_lease"], params)
            conn.execute(self._q["take_lease"], params)
            row = conn.execute(self._q["lease_holder"], params).fetchone()
        return row is not None and row["holder"] == holder

    async def resign(self, name: str, holder: str) -> None:
        with self._write() as conn:
            conn.execute(self._q["resign_lease"], {"name": name, "holder": holder})

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JobStoreError("the fleet registry is closed")
        return self._conn

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db(), self._q)


# --- rows, shared with the PostgreSQL registry ------------------------------------------------


def agent_row(agent: AgentRecord, now: float) -> dict[str, Any]:
    return agent.to_dict() | {"heartbeat_at": now}


def agent_from_row(row: dict[str, Any]) -> AgentRecord:
    return AgentRecord(
        id=row["id"],
        host=row["host"],
        version=row["version"],
        started_at=float(row["started_at"]),
        heartbeat_at=float(row["heartbeat_at"]),
    )


def instance_row(each: InstanceRecord, agent_id: str, now: float) -> dict[str, Any]:
    data = each.to_dict()
    data["idx"] = data.pop("index")
    data["agent"] = agent_id
    data["models"] = json.dumps(data["models"], sort_keys=True)
    data["details"] = json.dumps(data["details"], sort_keys=True)
    data["loaded_models"] = json.dumps(sorted(data["loaded_models"]))
    data["updated_at"] = now
    return data


def instance_from_row(row: dict[str, Any]) -> InstanceRecord:
    return InstanceRecord(
        agent=row["agent"],
        index=int(row["idx"]),
        base_url=row["base_url"],
        state=row["state"],
        device=row["device"],
        vram_used=row["vram_used"],
        vram_total=row["vram_total"],
        free_slots=int(row["free_slots"]),
        models=json.loads(row["models"]),
        models_digest=row["models_digest"],
        loaded_models=tuple(json.loads(row["loaded_models"] or "[]")),
        schema_digest=row["schema_digest"],
        details=json.loads(row["details"]),
        updated_at=float(row["updated_at"]),
    )


def frame_row(frame: StoredFrame) -> dict[str, Any]:
    return {
        "job_id": frame.job_id,
        "worker": frame.worker,
        "seq": frame.seq,
        "format": frame.image_format,
        "data": frame.data,
        "at": frame.at,
    }


def frame_from_row(row: dict[str, Any]) -> StoredFrame:
    return StoredFrame(
        row["job_id"], row["worker"], int(row["seq"]), row["format"], bytes(row["data"]), row["at"]
    )
