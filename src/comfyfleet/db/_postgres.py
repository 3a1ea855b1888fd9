"""How the PostgreSQL stores (jobs, webhook outbox) connect, migrate, and survive lost connections.

Each store object owns a small pool (psycopg's), so that concurrent calls each run their
transaction on a connection of their own: a transaction must never interleave with another
coroutine's statements. Connections are in autocommit mode; a change opens an explicit
transaction.

Round trips are what cost, so a change is two of them: `BEGIN; <lock>; <read>` and then
`<write>; COMMIT`, each sent as one string with its parameters bound in the client
(:func:`script`). psycopg's pipeline mode would keep server-side parameters, but measured slower
here: its bookkeeping costs more Python time than the round trips it saves.

A lost connection (the server restarted, an administrator terminated the backend, a network
blip) fails the call on it; :meth:`Database.run` then checks the pool's idle connections, drops
the dead ones, and runs the call once more on a fresh connection. Running twice is safe because
every write is guarded: an enqueue that did commit is found again by its id, a claim that did
commit leaves a lease that expires and puts the job back, a complete that did commit is refused
the second time (the job is finished either way). What still fails (the server stays down) is a
one-line JobStoreError naming the URL without its password; the dispatcher's and the webhook
service's loops try again at their next round.

A link that goes silent (cut, or the other machine gone without a word) must fail calls too,
not hang them: without help, a connection waits for an answer the kernel keeps retransmitting
for about 15 minutes. Every connection therefore asks for TCP keepalives and a TCP user timeout
(`LINK_CHECKS`), so a dead link fails its calls within about 10 seconds; the URL's own
`keepalives*` or `tcp_user_timeout` parameters win over these.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from comfyfleet.errors import ComfyfleetError

T = TypeVar("T")
Connection = psycopg.AsyncConnection[DictRow]

POOL_SIZE = 4
"""Connections per store object: enough for a gateway's and a dispatcher's concurrent calls."""
CONNECT_TIMEOUT_S = 10
POOL_TIMEOUT_S = 15.0
"""How long a call waits for a connection (the server down: the pool keeps reconnecting)."""

URL_SCHEMES = ("postgresql://", "postgres://")

LINK_CHECKS = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
"""libpq settings that end a connection whose peer went silent: an idle one after 5 s and 3
unanswered probes 2 s apart, one waiting for its data to be acknowledged after 10 s."""


def with_link_checks(url: str) -> str:
    """`url` with the `LINK_CHECKS` it does not set itself (it may tune or disable them)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # a malformed URL: connecting will say what is wrong
        return url
    return make_conninfo(url, **{k: v for k, v in LINK_CHECKS.items() if k not in given})


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def one_line(exc: BaseException) -> str:
    """psycopg's messages often run over several lines (with libpq's advice); the first says
    what happened."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def connect(url: str, error: type[ComfyfleetError], what: str) -> Connection:
    """One autocommit connection, or `error` saying in one line why `url` cannot be reached."""
    try:
        return await psycopg.AsyncConnection.connect(
            with_link_checks(url),
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except psycopg.Error as exc:
        raise error(
            f"cannot reach the {what} {redact(url)}: {one_line(exc)}",
            hint="check that PostgreSQL is running there and that the URL's user, password "
            "and database are right",
        ) from exc


class Database:
    """A pool of connections to one database, for one store object."""

    def __init__(self, url: str, error: type[ComfyfleetError], what: str) -> None:
        self.url = url
        self._error = error
        self._what = what
        self.pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            with_link_checks(url),
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=POOL_SIZE,
            timeout=POOL_TIMEOUT_S,
            open=False,
            name=what,
        )
        self.closed = False

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.pool.close()

    async def run(self, call: Callable[[Connection], Awaitable[T]]) -> T:
        """`call` on a pooled connection, once more on a fresh one if the connection was lost."""
        for attempt in (1, 2):
            if self.closed:
                raise self._error(f"the {self._what} is closed")
            used: list[Connection] = []
            try:
                async with self.pool.connection() as conn:
                    used.append(conn)
                    return await call(conn)
            except psycopg.OperationalError as exc:
                lost = bool(used) and used[0].closed
                if attempt == 2 or not lost:
                    raise self.failure(exc) from exc
                await self.pool.check()
        raise AssertionError("unreachable")

    def failure(self, exc: BaseException) -> ComfyfleetError:
        return self._error(
            f"the {self._what} {redact(self.url)} failed: {one_line(exc)}",
            hint="check that PostgreSQL is running; the call can be retried",
        )


async def script(
    conn: Connection,
    statements: Sequence[str],
    params: Mapping[str, Any] | None = None,
    *,
    rows_of: int | None = None,
) -> list[DictRow]:
    """Run `statements` in one round trip (parameters bound in the client); the rows of the last
    one that returns rows, or of statement `rows_of` (its index in `statements`). A transaction
    begun here and not ended is rolled back by the pool if the caller fails before ending it."""
    async with psycopg.AsyncClientCursor(conn) as cur:
        await cur.execute(";\n".join(s.rstrip().rstrip(";") for s in statements), params)
        rows: list[DictRow] = []
        index = 0
        while True:
            if cur.description is not None and rows_of in (None, index):
                rows = await cur.fetchall()
            if not cur.nextset():
                return rows
            index += 1


async def migrate(
    conn: Connection,
    queries: dict[str, str],
    migrations: list[tuple[int, str, str]],
    *,
    url: str,
    error: type[ComfyfleetError],
) -> list[int]:
    """Apply the `migrations` (version, name, script) the database lacks; return their versions.

    All of them run in one transaction under an advisory lock, so two processes starting at
    once take turns (the second finds nothing left to do) and a failed migration leaves the
    schema as it was. A database migrated by a newer comfyfleet is refused, naming both versions.
    """
    known = migrations
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(queries["lock_migrations"])
        await conn.execute(queries["create_migrations_table"])
        rows = await (await conn.execute(queries["applied_migrations"])).fetchall()
        done = {row["version"] for row in rows}
        newest = max(done, default=0)
        if known and newest > known[-1][0]:
            raise error(
                f"the job store {redact(url)} has schema version {newest}, newer than "
                f"this comfyfleet knows ({known[-1][0]})",
                hint="upgrade comfyfleet, or point it at another database",
            )
        for version, name, script in known:
            if version in done:
                continue
            await conn.execute(script.encode())  # bytes: run as a script, no placeholders
            record = {"version": version, "name": name, "applied_at": time.time()}
            await conn.execute(queries["record_migration"], record)
            applied.append(version)
    return applied
