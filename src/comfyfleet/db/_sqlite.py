"""How the stores that share one SQLite file (jobs, webhook outbox) connect and write.

The job store and the webhook outbox each keep a connection of their own to one file, and both
need the same two things: a connection in autocommit mode (so every transaction is an explicit
`BEGIN IMMEDIATE`, which takes the write lock before reading) with the file's pragmas run, and a
transaction that commits when its block ends and rolls back when it raises. The statements
themselves stay in each store's `.sql` file; these helpers take them by name.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from comfyfleet.db._files import load_migrations, split_statements
from comfyfleet.errors import ComfyfleetError

NO_CURSOR = 2**63 - 1
"""Above every seq SQLite hands out: a listing's `before` when it starts from the newest."""


@contextmanager
def opening(path: Path, pragmas: str) -> Iterator[sqlite3.Connection]:
    """A new connection to `path` (rows as `sqlite3.Row`) with the `pragmas` script run, for the
    caller to finish setting up inside the `with` block.

    The connection stays open when the block ends normally; it is closed again when opening, a
    pragma or the caller's setup raises, so a store that failed to open leaks nothing."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        for statement in split_statements(pragmas):
            conn.execute(statement)
        yield conn
    except BaseException:
        conn.close()
        raise


@contextmanager
def immediate(conn: sqlite3.Connection, queries: Mapping[str, str]) -> Iterator[sqlite3.Connection]:
    """One `BEGIN IMMEDIATE` transaction: committed when the block ends, rolled back if it raises.

    `queries` names the statements `begin_immediate`, `commit` and `rollback`."""
    conn.execute(queries["begin_immediate"])
    try:
        yield conn
        conn.execute(queries["commit"])
    except BaseException:
        if conn.in_transaction:
            conn.execute(queries["rollback"])
        raise


def migrate_file(
    conn: sqlite3.Connection,
    queries: Mapping[str, str],
    package: str,
    *,
    where: str,
    error: type[ComfyfleetError],
) -> list[int]:
    """Run the migrations of `package`'s `sql/` folder that the file has not had yet, each in its
    own `BEGIN IMMEDIATE` transaction; return their versions. A file migrated by a newer
    comfyfleet is refused, naming both versions (`where` names the file in the message)."""
    conn.execute(queries["create_migrations_table"])
    known = load_migrations(package)
    applied: list[int] = []
    for version, name, script in known:
        with immediate(conn, queries):
            done = {row[0] for row in conn.execute(queries["applied_migrations"])}
            if version in done:
                continue
            for statement in split_statements(script):
                conn.execute(statement)
            record = {"version": version, "name": name, "applied_at": time.time()}
            conn.execute(queries["record_migration"], record)
            applied.append(version)
    newest = max((row[0] for row in conn.execute(queries["applied_migrations"])), default=0)
    if known and newest > known[-1][0]:
        raise error(
            f"{where} has schema version {newest}, newer than this comfyfleet knows "
            f"({known[-1][0]})",
            hint="upgrade comfyfleet, or point it at another store",
        )
    return applied
