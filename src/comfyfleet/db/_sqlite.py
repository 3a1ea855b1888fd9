"""How the stores that share one SQLite file (jobs, webhook outbox) connect and write.

The job store and the webhook outbox each keep a connection of their own to one file, and both
need the same two things: a connection in autocommit mode (so every transaction is an explicit
`BEGIN IMMEDIATE`, which takes the write lock before reading) with the file's pragmas run, and a
transaction that commits when its block ends and rolls back when it raises. The statements
themselves stay in each store's `.sql` file; these helpers take them by name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from comfyfleet.db._files import split_statements

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
