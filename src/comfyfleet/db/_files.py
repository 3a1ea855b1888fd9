"""Reading the SQL that ships with a package: named queries and numbered migrations.

A package keeps `NNNN_name.sql` migrations, run once each in order, and `queries.sql`, whose
`-- name: x` lines start the block of query x. The job store's database keeps its SQL in
`comfyfleet.jobs`: `sql/` for SQLite, `sql/postgres/` for PostgreSQL.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from importlib.resources.abc import Traversable

_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


def load_queries(
    package: str, *, file_name: str = "queries.sql", folder: str = "sql"
) -> dict[str, str]:
    """The named blocks of `<folder>/<file_name>` in `package`: `-- name: x` starts block x.

    Each store keeps its queries next to its own code (the job store in `comfyfleet.jobs`, the
    webhook outbox in `comfyfleet.webhooks`), even where they share one database."""
    text = _sql_dir(package, folder).joinpath(file_name).read_text("utf-8")
    preamble, *pairs = _NAME_LINE.split(text)
    if _has_code(preamble):
        raise ValueError(f"{file_name}: SQL before the first '-- name:' line")
    queries: dict[str, str] = {}
    for name, body in zip(pairs[::2], pairs[1::2], strict=True):
        if name in queries or not _has_code(body):
            raise ValueError(f"{file_name}: query '{name}' is defined twice or empty")
        queries[name] = body.strip()
    return queries


def load_migrations(package: str, folder: str = "sql") -> list[tuple[int, str, str]]:
    """(version, name, script) of every `<folder>/NNNN_name.sql` of `package`, oldest first
    (the job store's database: `sql` for SQLite, `sql/postgres` for PostgreSQL)."""
    found: dict[int, tuple[int, str, str]] = {}
    for entry in _sql_dir(package, folder).iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        version = int(match[1])
        if version in found:
            raise ValueError(f"two migrations have version {version}")
        found[version] = (version, match[2], entry.read_text("utf-8"))
    return [found[version] for version in sorted(found)]


def split_statements(script: str) -> list[str]:
    """Cut a script into single statements (sqlite3 runs one per `execute`), using SQLite's own
    idea of where a statement ends, so that a `;` in a string or a trigger body does not cut."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _has_code(pending[:-1]):
                statements.append(pending.strip())
            pending = ""
    if _has_code(pending.removesuffix(";")):
        raise ValueError(f"unterminated SQL statement: {pending.strip()[:60]}")
    return statements


def _sql_dir(package: str, folder: str) -> Traversable:
    place = resources.files(package)
    for part in folder.split("/"):
        place = place.joinpath(part)
    return place


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())
