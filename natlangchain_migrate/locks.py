"""The PostgreSQL advisory lock that lets one runner at a time apply migrations, whole:
the key, waiting for it, holding it in either lock mode, and releasing it.

Waiters poll ``pg_try_advisory_lock`` with a short jittered backoff instead of
blocking in ``pg_advisory_lock``: a session blocked in a statement holds a
snapshot, and a ``CREATE INDEX CONCURRENTLY`` run by the lock holder would then
wait for it forever. Between polls the waiter sits idle, outside any
transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import asyncpg
from asyncpg.transaction import Transaction

from natlangchain_migrate import telemetry
from natlangchain_migrate.connection import (
    RunConnection,
    cleanup_scope,
    despite_cancellation,
    end_interrupted_transaction,
    open_run_connection,
)
from natlangchain_migrate.errors import LockLostError, LockTimeoutError
from natlangchain_migrate.events import log
from natlangchain_migrate.settings import LockMode, RunnerOptions

NOTIFY_CHANNEL = "natlangchain_migrate_lock"

_HOLDER_QUERY = """
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr,
       extract(epoch FROM now() - a.backend_start)::float8 AS session_age_s
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
LIMIT 1
"""


def lock_key(namespace: str) -> int:
    """A stable signed 64-bit key: the first 8 bytes of SHA-256 of the namespace."""
    digest = hashlib.sha256(namespace.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def default_namespace(schema: str) -> str:
    """The lock namespace when none is given: one lock per package and target schema."""
    return f"natlangchain_migrate:{schema}"


class LockNoLongerNeeded(Exception):
    """Raised by ``acquire`` when, while we waited, the ``unless`` check found the work done."""


def migration_lock(
    conn: asyncpg.Connection,
    options: RunnerOptions,
    *,
    unless: Callable[[], Awaitable[bool]] | None = None,
) -> AdvisoryLock:
    """The lock every runner of one schema shares; LISTEN only where it works (not through
    PgBouncer's transaction pooling)."""
    return AdvisoryLock(
        conn,
        lock_key(options.lock.namespace or default_namespace(options.schema)),
        wait=options.lock.wait,
        listen=not options.transaction_pooling,
        unless=unless,
    )


@asynccontextmanager
async def holding(lock: AdvisoryLock, lock_mode: LockMode) -> AsyncIterator[None]:
    """Hold the lock around a piece of work (applying, rolling back, repairing).

    ``session`` mode: the session lock, released on the way out, shielded from
    cancellation. ``transaction`` mode: the work runs inside the transaction that
    holds the lock, committed on success and rolled back on error.
    """
    if lock_mode is LockMode.TRANSACTION:
        with telemetry.lock_wait_span(lock.key, lock_mode, LockNoLongerNeeded):
            transaction, waited_ms = await lock.acquire_in_transaction()
        log.info("lock_acquired", lock_key=lock.key, waited_ms=waited_ms, mode="transaction")
        try:
            yield
        except BaseException:
            if not lock.conn.is_closed():  # a dead session rolled back by itself
                with cleanup_scope():
                    await transaction.rollback()
            raise
        await transaction.commit()
        return
    with telemetry.lock_wait_span(lock.key, lock_mode, LockNoLongerNeeded):
        waited_ms = await lock.acquire()
    log.info("lock_acquired", lock_key=lock.key, waited_ms=waited_ms)
    try:
        yield
    except BaseException:
        # A statement interrupted by a cancellation (SIGTERM) may leave its transaction
        # open: end it, then unlock. If that fails too (a dead connection has no lock left
        # to release), the body's error is the one to report; the unlock's is logged.
        if lock.conn.is_closed():
            raise  # the server ended the session, and with it the lock
        with cleanup_scope():
            try:
                await end_interrupted_transaction(lock.conn)
                await lock.release()
            except Exception as error:
                log.warning("lock_release_failed", lock_key=lock.key, error=str(error))
            else:
                log.info("lock_released", lock_key=lock.key)
        raise
    await despite_cancellation(lock.release())
    log.info("lock_released", lock_key=lock.key)


@asynccontextmanager
async def locked_connection(
    options: RunnerOptions, *, dry_run: bool = False
) -> AsyncIterator[RunConnection]:
    """The run's connection, holding the migration lock for a short piece of work
    (rollback, repair, baseline); a dry run takes no lock."""
    async with open_run_connection(options) as connection:
        if dry_run:
            yield connection
            return
        async with holding(migration_lock(connection.conn, options), options.lock.mode):
            yield connection


class LockHolder(NamedTuple):
    """The session that holds the lock, as pg_locks and pg_stat_activity show it."""

    pid: int
    application_name: str
    client_addr: str | None
    session_age_s: float


class AdvisoryLock:
    """A session- or transaction-level advisory lock on one connection.

    ``acquire`` waits at most ``wait`` seconds, logging the holder every
    ``report_every`` seconds; ``release`` raises if PostgreSQL says we did not
    hold it. While waiting, an ``unless`` check that returns True (another
    runner applied everything) ends the wait with LockNoLongerNeeded, so
    waiters leave together instead of taking the lock one after another.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        key: int,
        *,
        wait: float,
        report_every: float = 5.0,
        first_poll: float = 0.02,
        max_poll: float = 0.5,
        listen: bool = True,
        unless: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.conn = conn
        self.key = key
        self.wait = wait
        self.report_every = report_every
        self.first_poll = first_poll
        self.max_poll = max_poll
        self.listen = listen
        self.unless = unless

    async def acquire(self) -> float:
        """Take the session lock; return how many milliseconds we waited."""

        async def try_once() -> bool:
            return bool(await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))

        return await self._wait(try_once)

    async def acquire_in_transaction(self) -> tuple[Transaction, float]:
        """Open a transaction holding the transaction-level lock (PgBouncer-safe mode).

        Each poll is a transaction of its own, rolled back when the lock is
        busy, so a waiter never idles inside an open transaction.
        """
        holder: list[Transaction] = []

        async def try_once() -> bool:
            transaction = self.conn.transaction()
            await transaction.start()
            if await self.conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.key):
                holder.append(transaction)
                return True
            await transaction.rollback()
            return False

        waited_ms = await self._wait(try_once)
        return holder[0], waited_ms

    async def release(self) -> None:
        """Release the session lock and wake the waiters; an unlock that returns false is
        an error."""
        released = await self.conn.fetchval(
            "SELECT pg_advisory_unlock($1) AND pg_notify($2, $3) IS NOT NULL",
            self.key,
            NOTIFY_CHANNEL,
            str(self.key),
        )
        if not released:
            raise LockLostError(
                f"advisory lock {self.key} was not held by this session when releasing it; "
                "another tool may have unlocked it or the connection was reset (through "
                "PgBouncer in transaction mode use --lock-mode transaction)"
            )

    async def holder(self) -> LockHolder | None:
        """Who holds the lock now, or None."""
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        row = await self.conn.fetchrow(_HOLDER_QUERY, unsigned >> 32, unsigned & 0xFFFFFFFF)
        if row is None:
            return None
        return LockHolder(
            pid=row["pid"],
            application_name=row["application_name"] or "",
            client_addr=row["client_addr"],
            session_age_s=round(row["session_age_s"], 3),
        )

    async def _wait(self, try_once: Callable[[], Awaitable[bool]]) -> float:
        """Poll ``try_once`` with a jittered backoff until it succeeds or time runs out.

        In session mode a NOTIFY from the releasing holder cuts each pause
        short, so waiters do not sleep past a release.
        """
        started = time.monotonic()
        next_report = started + min(self.report_every, 1.0)
        first_seen: dict[int, float] = {}
        delay = self.first_poll
        # asyncio's Event, not anyio's: every acquire makes one, and anyio's first use
        # costs a start-up its backend's imports.
        wake = [asyncio.Event()]

        def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            if payload == str(self.key):
                wake[0].set()

        listening = False
        try:
            while not await try_once():
                now = time.monotonic()
                if now - started >= self.wait:
                    raise LockTimeoutError(
                        f"waited {self.wait:g}s for the migration lock (key {self.key}); "
                        f"{_describe(await self.holder())} still holds it. Wait for it to "
                        "finish, or stop it, or raise --lock-timeout"
                    )
                if now >= next_report:
                    await self._report_holder(now - started, first_seen)
                    next_report = now + self.report_every
                if self.listen and not listening:
                    await self.conn.add_listener(NOTIFY_CHANNEL, on_notify)
                    listening = True
                pause = min(delay * random.uniform(0.5, 1.5), self.wait - (now - started))
                import anyio  # only a contended lock waits: imported here

                with anyio.move_on_after(max(0.0, pause)):
                    await wake[0].wait()
                wake[0] = asyncio.Event()
                if self.unless is not None and await self.unless():
                    raise LockNoLongerNeeded
                delay = min(delay * 2, self.max_poll)
        finally:
            if listening:
                import anyio

                with anyio.CancelScope(shield=True):
                    await self.conn.remove_listener(NOTIFY_CHANNEL, on_notify)
        return round((time.monotonic() - started) * 1000, 1)

    async def _report_holder(self, waited_s: float, first_seen: dict[int, float]) -> None:
        current = await self.holder()
        if current is None:
            return
        first_seen.setdefault(current.pid, waited_s)
        log.info(
            "lock_waiting",
            lock_key=self.key,
            waited_ms=round(waited_s * 1000, 1),
            holder_pid=current.pid,
            holder_application_name=current.application_name,
            holder_client_addr=current.client_addr,
            holder_session_age_s=current.session_age_s,
            held_for_at_least_s=round(waited_s - first_seen[current.pid], 3),
        )


def _describe(holder: LockHolder | None) -> str:
    if holder is None:
        return "a session that has since gone"
    where = f" from {holder.client_addr}" if holder.client_addr else ""
    return f"pid {holder.pid} ({holder.application_name or 'no application_name'}{where})"
