"""A real PostgreSQL for the tests that need one, with a database of their own.

The server is `$COMFYFLEET_TEST_POSTGRES` (a libpq URL to a maintenance database, default
`postgresql://postgres@127.0.0.1:5432/postgres`). When nothing answers there and the machine has
Debian's PostgreSQL packages, the local cluster is started (`pg_ctlcluster`); when there is no
server at all, the tests that need it skip, saying why. Each test run creates its own database
(`comfyfleet_test_<random>`) and drops it at the end, so runs never share state.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CLUSTERS = Path("/etc/postgresql")


class PostgresMissing(Exception):
    """No PostgreSQL server could be reached or started."""


def maintenance_url() -> str:
    return os.environ.get("COMFYFLEET_TEST_POSTGRES", DEFAULT_URL)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def ensure_server(url: str) -> None:
    """Make sure something answers at `url`: start the local cluster when it is down."""
    if _answers(url):
        return
    versions = sorted(p.name for p in CLUSTERS.iterdir()) if CLUSTERS.is_dir() else []
    if not versions:
        raise PostgresMissing(f"nothing answers at {url} and no local cluster is installed")
    for version in versions:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            check=False,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _answers(url):
            return
        time.sleep(0.2)
    raise PostgresMissing(f"started PostgreSQL {versions}, but nothing answers at {url}")


@contextlib.contextmanager
def scratch_database(url: str | None = None) -> Iterator[str]:
    """A new empty database on the server; yields its URL, drops it (and its sessions) after."""
    server = url or maintenance_url()
    ensure_server(server)
    name = f"comfyfleet_test_{secrets.token_hex(6)}"
    with admin(server) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(server, name)
    finally:
        with admin(server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def terminate_backends(url: str) -> int:
    """Kill every other session connected to `url`'s database, as an administrator (or a
    restart) would: how the tests cut a store's connections under it."""
    database = urlsplit(url).path.lstrip("/")
    with admin(url) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def _answers(url: str) -> bool:
    try:
        with admin(url) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True
