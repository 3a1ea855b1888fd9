"""What the SQL stores share: connecting, transactions, named queries and numbered migrations.

The job store, its event log and the webhook outbox live in one database (a SQLite file, or a
PostgreSQL database); each keeps its own statements, and these helpers are how they open, read
their SQL files, migrate and survive a lost connection.
"""

from __future__ import annotations

from comfyfleet.db._files import load_migrations, load_queries, split_statements
from comfyfleet.db._postgres import (
    URL_SCHEMES,
    Connection,
    Database,
    connect,
    migrate,
    one_line,
    redact,
    script,
)
from comfyfleet.db._sqlite import NO_CURSOR, immediate, migrate_file, opening

__all__ = [
    "NO_CURSOR",
    "URL_SCHEMES",
    "Connection",
    "Database",
    "connect",
    "immediate",
    "load_migrations",
    "load_queries",
    "migrate",
    "migrate_file",
    "one_line",
    "opening",
    "redact",
    "script",
    "split_statements",
]
