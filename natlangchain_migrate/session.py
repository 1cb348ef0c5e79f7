"""One run's database session: the connection held for the whole run, and the lock.

The lock and the migrations share that one connection. The lock is released
in ``finally``, shielded from cancellation; a connection that dies releases
its session lock by itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NamedTuple, cast

import anyio
import asyncpg
import structlog

from natlangchain_migrate.db import connect
from natlangchain_migrate.errors import ConfigurationError

if TYPE_CHECKING:
    from natlangchain_migrate.locks import AdvisoryLock

log = structlog.get_logger("natlangchain_migrate")

LOCK_MODES = ("session", "transaction")


class Target(NamedTuple):
    """Where to connect and how: a DSN or the caller's own pool."""

    dsn: str | None = None
    pool: asyncpg.Pool | None = None
    wait: float = 0.0
    lock_mode: str = "session"

    @property
    def pgbouncer(self) -> bool:
        """Transaction lock mode is the one that works through PgBouncer's transaction pooling."""
        return self.lock_mode == "transaction"


def resolve_dsn(dsn: str | None) -> str:
    """The DSN given, else DATABASE_URL; an error that says how to set one if neither."""
    resolved = dsn or os.environ.get("DATABASE_URL")
    if not resolved:
        raise ConfigurationError(
            "no database given: set DATABASE_URL or pass --database-url "
            "(postgresql://user:password@host:5432/dbname)"
        )
    return resolved


class Session:
    """The run's one connection, held for the whole run, and a second one on demand.

    The second connection (blocker reports, index progress) is opened only
    when a migration runs long enough to need it: from the caller's pool if
    one was given, else as a connection of its own. An up-to-date start-up
    opens exactly one connection.
    """

    def __init__(self, conn: asyncpg.Connection, target: Target, dsn: str | None) -> None:
        self.conn = conn
        self._target = target
        self._dsn = dsn

    @asynccontextmanager
    async def second_connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._target.pool is not None:
            async with self._target.pool.acquire() as borrowed:
                yield cast(asyncpg.Connection, borrowed)
            return
        assert self._dsn is not None
        own = await connect(self._dsn, pgbouncer=self._target.pgbouncer)
        try:
            yield own
        finally:
            with anyio.CancelScope(shield=True):
                await own.close()


@asynccontextmanager
async def open_session(target: Target) -> AsyncIterator[Session]:
    """Yield the run's Session: a connection of our own, or one borrowed from the caller's pool."""
    if target.lock_mode not in LOCK_MODES:
        raise ConfigurationError(
            f"lock mode {target.lock_mode!r} is not one of {', '.join(LOCK_MODES)}"
        )
    if target.pool is not None:
        async with target.pool.acquire() as borrowed:
            # The proxy behaves as the connection it wraps for everything we call.
            yield Session(cast(asyncpg.Connection, borrowed), target, None)
        return
    dsn = resolve_dsn(target.dsn)
    conn = await connect(dsn, wait=target.wait, pgbouncer=target.pgbouncer)
    try:
        yield Session(conn, target, dsn)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await conn.close()
        raise
    await conn.close()


@asynccontextmanager
async def session_lock(lock: AdvisoryLock) -> AsyncIterator[float]:
    """Hold the session advisory lock; yields the milliseconds waited for it.

    On the way out the unlock is shielded from cancellation. If the body
    failed and the unlock fails too (a dead connection has no lock left to
    release), the body's error wins and the unlock's is logged.
    """
    waited_ms = await lock.acquire()
    log.info("lock_acquired", lock_key=lock.key, waited_ms=waited_ms)
    try:
        yield waited_ms
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await lock.release()
            except Exception as error:  # the body's error is the one to report
                log.warning("lock_release_failed", lock_key=lock.key, error=str(error))
        raise
    with anyio.CancelScope(shield=True):
        await lock.release()
    log.info("lock_released", lock_key=lock.key)


@asynccontextmanager
async def held_lock(lock: AdvisoryLock, lock_mode: str) -> AsyncIterator[None]:
    """Hold the lock for a short piece of work (rollback, repair) in either lock mode.

    In transaction mode the work runs inside the transaction that holds the
    lock, committed on success and rolled back on error.
    """
    if lock_mode != "transaction":
        async with session_lock(lock):
            yield
        return
    transaction, waited_ms = await lock.acquire_in_transaction()
    log.info("lock_acquired", lock_key=lock.key, waited_ms=waited_ms, mode="transaction")
    try:
        yield
    except BaseException:
        with anyio.CancelScope(shield=True):
            await transaction.rollback()
        raise
    await transaction.commit()
