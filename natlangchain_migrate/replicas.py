"""The replica registry (``schema_replicas``) and the heartbeat that keeps a replica in it.

A contract part may drop what the release before it still reads, so it runs only when
no replica of an older release is alive. Each replica says so itself: ``heartbeat()``
registers it with the release it ships (its highest migration version), refreshes
``seen_at`` every ``interval`` seconds and deletes its row on the way out. A replica
that died without a word counts as gone once its ``seen_at`` is older than the contract
runner's ``replica_max_age``. Times are the server's (``now()``), so clocks never skew.

The registry is written here only, never by ``migrate()``: an up-to-date start-up
keeps its one round trip and takes no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, cast

import asyncpg

from natlangchain_migrate.errors import ConfigurationError, PrivilegeError
from natlangchain_migrate.events import log
from natlangchain_migrate.sqltext import quote_ident

if TYPE_CHECKING:
    from importlib.abc import Traversable
    from types import TracebackType
    from typing import Unpack

REPLICAS_TABLE = "schema_replicas"
LABEL_VARIABLE = "NATLANGCHAIN_MIGRATE_REPLICA_LABEL"
# Rows of replicas that vanished without deleting theirs are pruned after this long.
_PRUNE_AFTER = "1 day"
_STOP_TIMEOUT_S = 10.0


class Replica(NamedTuple):
    """One row of the registry, with how long ago it was last seen (server time)."""

    replica_id: str
    release: int
    label: str | None
    started_at: datetime
    seen_s_ago: float

    def describe(self) -> dict[str, object]:
        """The replica as an event field: who, which release, when last seen."""
        return {
            "replica_id": self.replica_id,
            "release": self.release,
            "label": self.label,
            "seen_s_ago": round(self.seen_s_ago, 1),
        }


def replicas_table(schema: str) -> str:
    """The registry's qualified name in the runner's schema."""
    return f"{quote_ident(schema)}.{quote_ident(REPLICAS_TABLE)}"


def alive_query(table: str) -> str:
    """Replicas seen within ``$1`` seconds, oldest release first (a query's text, so the
    contract runner can send it with its other reads)."""
    return (
        "SELECT replica_id, release, label, started_at, "
        "extract(epoch FROM now() - seen_at)::float8 AS seen_s_ago "
        f"FROM {table} WHERE seen_at > now() - make_interval(secs => $1) "
        "ORDER BY release, replica_id"
    )


def as_replica(record: asyncpg.Record) -> Replica:
    return Replica(
        record["replica_id"],
        int(record["release"]),
        record["label"],
        record["started_at"],
        float(record["seen_s_ago"]),
    )


async def alive_replicas(conn: asyncpg.Connection, schema: str, max_age: float) -> list[Replica]:
    """The replicas seen within ``max_age`` seconds; none when no heartbeat ever ran."""
    table = replicas_table(schema)
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return []
    return [as_replica(record) for record in await conn.fetch(alive_query(table), max_age)]


async def ensure_registry(conn: asyncpg.Connection, schema: str) -> None:
    """Create the registry (and its schema) if absent. Replicas starting together take a
    transaction-level advisory lock of their own for it: concurrent CREATE TABLE IF NOT
    EXISTS can fail on the catalog's unique index."""
    table = replicas_table(schema)
    if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
        return
    from natlangchain_migrate.locks import lock_key

    try:
        async with conn.transaction():
            key = lock_key(f"natlangchain_migrate:{schema}:replicas")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            await conn.execute(
                f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}; "
                f"CREATE TABLE IF NOT EXISTS {table} ("
                " replica_id text PRIMARY KEY,"
                " release bigint NOT NULL,"
                " label text,"
                " started_at timestamptz NOT NULL DEFAULT now(),"
                " seen_at timestamptz NOT NULL DEFAULT now()); "
                f"COMMENT ON TABLE {table} IS 'Running replicas and the release each ships "
                "(natlangchain-migrate heartbeat): contract parts wait for older ones'"
            )
    except asyncpg.InsufficientPrivilegeError as error:
        role = await conn.fetchval("SELECT current_user")
        raise PrivilegeError(
            f"role {role} may not create the replica registry {table}: {error}. Let it "
            f"(GRANT USAGE, CREATE ON SCHEMA {quote_ident(schema)} TO {role};), or create the "
            "table once as its owner by starting one heartbeat, then start again"
        ) from error


def release_of(migrations_dir: Traversable | Path | str | None) -> int:
    """The release a replica ships: its highest migration version (from migrations.sum
    when it matches the folder, else from the files)."""
    from natlangchain_migrate.manifest import current_manifest

    manifest = current_manifest(migrations_dir)
    if manifest is not None and manifest.versions:
        return max(manifest.versions)
    from natlangchain_migrate.discovery import load_migrations

    return load_migrations(migrations_dir)[-1].version


def default_label() -> str | None:
    """NATLANGCHAIN_MIGRATE_REPLICA_LABEL, else HOSTNAME (a pod's name), else the host's."""
    return os.environ.get(LABEL_VARIABLE) or os.environ.get("HOSTNAME") or socket.gethostname()


class HeartbeatOptions(TypedDict, total=False):
    """The keywords of ``heartbeat()`` and ``start_heartbeat()``: ``Heartbeat``'s."""

    pool: asyncpg.Pool | None
    migrations_dir: Traversable | Path | str | None
    schema: str | None
    interval: float
    label: str | None
    replica_id: str | None


class Heartbeat:
    """``async with heartbeat(...)``: this replica registered for the block's duration.

    Entering registers the replica (and raises if it cannot: a replica the contract
    runner cannot see must not serve); a background task refreshes ``seen_at`` every
    ``interval`` seconds, logging ``heartbeat_failed`` and trying again next time when
    the database is briefly away; leaving deletes the row.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        migrations_dir: Traversable | Path | str | None = None,
        schema: str | None = None,
        interval: float = 15.0,
        label: str | None = None,
        replica_id: str | None = None,
    ) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ConfigurationError(
                f"heartbeat interval={interval!r} must be a positive number of seconds, well "
                "below the contract runner's replica max age (default 60)"
            )
        self._dsn = dsn
        self._pool = pool
        self.schema = schema or os.environ.get("NATLANGCHAIN_MIGRATE_SCHEMA") or "public"
        self.interval = interval
        self.label = label if label is not None else default_label()
        self.replica_id = replica_id or uuid.uuid4().hex
        self.release = release_of(migrations_dir)
        self.table = replicas_table(self.schema)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        await self._with_connection(self._register)
        log.info(
            "replica_registered",
            replica_id=self.replica_id,
            release=self.release,
            label=self.label,
            interval_s=self.interval,
        )
        self._task = asyncio.create_task(self._beat_forever())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self._with_connection(self._unregister), timeout=_STOP_TIMEOUT_S)
            log.info("replica_unregistered", replica_id=self.replica_id)
        except Exception as problem:  # the row expires by itself after the max age
            log.warning("replica_unregister_failed", replica_id=self.replica_id, error=str(problem))
        finally:
            await self._drop_connection()

    async def beat(self) -> None:
        """Refresh ``seen_at`` now (re-creating the row if something removed it)."""
        await self._with_connection(self._refresh)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception as problem:
                await self._drop_connection()
                log.warning("heartbeat_failed", replica_id=self.replica_id, error=str(problem))

    def _upsert(self, *, prune: bool) -> str:
        prefix = (
            f"WITH pruned AS (DELETE FROM {self.table} "
            f"WHERE seen_at < now() - interval '{_PRUNE_AFTER}') "
            if prune
            else ""
        )
        return (
            f"{prefix}INSERT INTO {self.table} (replica_id, release, label, started_at, seen_at) "
            "VALUES ($1, $2, $3, now(), now()) ON CONFLICT (replica_id) DO UPDATE "
            "SET seen_at = now(), release = EXCLUDED.release, label = EXCLUDED.label"
        )

    async def _register(self, conn: asyncpg.Connection) -> None:
        await ensure_registry(conn, self.schema)
        await conn.execute(self._upsert(prune=True), self.replica_id, self.release, self.label)

    async def _refresh(self, conn: asyncpg.Connection) -> None:
        await conn.execute(self._upsert(prune=False), self.replica_id, self.release, self.label)

    async def _unregister(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"DELETE FROM {self.table} WHERE replica_id = $1", self.replica_id)

    async def _with_connection(self, work: Any) -> None:
        """Run ``work(conn)`` on a connection of the pool, else on our own (kept open
        between beats, opened again after a failure)."""
        if self._pool is not None:
            async with self._pool.acquire() as borrowed:
                await work(cast(asyncpg.Connection, borrowed))
            return
        if self._conn is None or self._conn.is_closed():
            from natlangchain_migrate.connection import connect, resolve_dsn

            self._conn = await connect(resolve_dsn(self._dsn))
        await work(self._conn)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=_STOP_TIMEOUT_S)
            except Exception:
                conn.terminate()


def heartbeat(dsn: str | None = None, **options: Unpack[HeartbeatOptions]) -> Heartbeat:
    """Keep this replica in the registry while the block runs (asyncio apps).

    ``async with natlangchain_migrate.heartbeat(): ...`` in a FastAPI lifespan, after
    ``migrate()``. ``dsn`` defaults to DATABASE_URL; ``pool`` borrows a connection per
    beat instead of keeping one. The release is the highest version in
    ``migrations_dir``; ``label`` defaults to NATLANGCHAIN_MIGRATE_REPLICA_LABEL, else
    HOSTNAME; ``replica_id`` to a fresh uuid4 hex.
    """
    return Heartbeat(dsn, **options)


class ThreadHeartbeat:
    """The heartbeat on a daemon thread of its own, for synchronous apps; ``stop()`` ends
    it and deletes the row (also run at interpreter exit)."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat
        self.replica_id = heartbeat.replica_id
        self.release = heartbeat.release
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._serve, name="natlangchain-migrate-heartbeat", daemon=True
        )

    def start(self) -> ThreadHeartbeat:
        """Start the thread and return once the replica is registered (or raise why not)."""
        import atexit

        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """End the heartbeat and delete this replica's row; safe to call more than once."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop has closed already
                return
            self._thread.join(_STOP_TIMEOUT_S * 2)

    def _serve(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # registration failed: start() re-raises it
            self._failure = error
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with self.heartbeat:
            self._ready.set()
            await self._stopping.wait()


def start_heartbeat(dsn: str | None = None, **options: Unpack[HeartbeatOptions]) -> ThreadHeartbeat:
    """``heartbeat()`` for synchronous apps (Flask, gunicorn workers): registers the replica
    before it returns, refreshes it from a daemon thread, and deletes it on ``.stop()`` or
    at exit. Keywords as for ``heartbeat()`` (a ``pool`` must belong to no other loop)."""
    return ThreadHeartbeat(Heartbeat(dsn, **options)).start()
