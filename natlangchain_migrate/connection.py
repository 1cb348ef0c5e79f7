"""Connecting: the run's connection, waiting for a server that is not up yet, and
what to say when we can't, without ever printing a password.

A run holds one connection from start to end: the advisory lock and the
migrations share it. A second one (blocker reports, index progress) is opened
only when a migration runs long enough to need it, so an up-to-date start-up
opens exactly one. A wrong password, an unknown database or a bad DSN fails at
once; a refused connection, an unresolved name or a server still starting is
retried until the ``connect_wait`` deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar, cast

import asyncpg

if TYPE_CHECKING:
    import anyio

from natlangchain_migrate import libpq
from natlangchain_migrate.dsn import as_url, redact, scrub, secrets_of
from natlangchain_migrate.errors import (
    ConfigurationError,
    ConnectionRejectedError,
    DatabaseUnreachableError,
)
from natlangchain_migrate.events import log
from natlangchain_migrate.settings import RunnerOptions

T = TypeVar("T")

_REJECTED = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
_RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
)
# What the server answers a start-up setting it does not know, takes no such value, or
# lets no one set at start-up.
_SETTING_REFUSED = frozenset({"42704", "22023", "55P02", "42501"})
CLEANUP_S = 5.0
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3


def application_name() -> str:
    """How our sessions appear in pg_stat_activity: ``natlangchain-migrate/<host>/<pid>``."""
    return f"natlangchain-migrate/{socket.gethostname()}/{os.getpid()}"[:63]


def server_settings(*, transaction_pooling: bool) -> dict[str, str]:
    """Settings sent in the startup packet (free: no extra round trip).

    PgBouncer refuses startup parameters it does not know, so through a
    transaction pooler we send only application_name.
    """
    settings = {"application_name": application_name()}
    if not transaction_pooling:
        settings |= {
            # The server notices a vanished runner and frees its session lock.
            "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
            "client_connection_check_interval": "5s",
        }
    return settings


def _set_client_keepalives(conn: asyncpg.Connection) -> None:
    """Turn on TCP keepalives on our side, so a server gone from the network is noticed."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def connect(
    dsn: str,
    *,
    wait: float = 0.0,
    transaction_pooling: bool = False,
    connect_timeout: float = 10.0,
) -> asyncpg.Connection:
    """A connection to ``dsn``, retrying a server that is not up until ``wait`` seconds pass."""
    libpq.check_foreign_prefix(dsn)
    url = as_url(dsn)
    deadline = time.monotonic() + wait
    attempt = 0
    delay = 0.25
    while True:
        attempt += 1
        try:
            conn = await asyncpg.connect(
                url,
                timeout=connect_timeout,
                server_settings=server_settings(transaction_pooling=transaction_pooling),
                statement_cache_size=0 if transaction_pooling else 100,
            )
            _set_client_keepalives(conn)
            return conn
        except _REJECTED as error:
            raise ConnectionRejectedError(
                f"{libpq.describe(dsn)} refused the connection: {scrub(str(error), dsn)}; "
                "check the user, password and database name in --database-url, DATABASE_URL "
                "or dsn= (or the PG* environment)"
            ) from None
        except asyncpg.ClientConfigurationError as error:
            if not isinstance(error.__context__, OSError):  # a TLS file it could not read
                raise _invalid(dsn, error) from None
            raise ConfigurationError(
                f"cannot connect to {libpq.describe(dsn)} with TLS: {scrub(str(error), dsn)}; "
                + libpq.tls_files_advice(dsn)
            ) from None
        except (ValueError, asyncpg.InterfaceError) as error:
            raise _invalid(dsn, error) from None
        except _RETRYABLE as error:
            if type(error) is ConnectionError and libpq.tls_required(dsn):
                # asyncpg's plain ConnectionError at start-up with TLS required: the
                # server said no to TLS. Retrying cannot change that.
                raise ConnectionRejectedError(
                    f"cannot connect to {libpq.describe(dsn)}: {scrub(str(error), dsn)}; "
                    + libpq.tls_refused_advice(dsn)
                ) from None
            reason = scrub(str(error) or type(error).__name__, dsn)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" for {wait:g}s" if wait else ""
                raise DatabaseUnreachableError(
                    f"could not connect to {libpq.describe(dsn)}{waited}: {reason}; is the server "
                    "running, and does --database-url, DATABASE_URL or dsn= point at it? "
                    "(--wait SECONDS waits for a server that is starting)"
                ) from None
            log.info(
                "database_waiting",
                attempt=attempt,
                reason=reason,
                retry_in_s=round(min(delay, remaining), 2),
                remaining_s=round(remaining, 1),
            )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 1.6, 2.0)
        except asyncpg.PostgresError as error:
            if error.sqlstate not in _SETTING_REFUSED or "parameter" not in str(error):
                raise
            raise _setting_refused(dsn, error) from None


def _setting_refused(dsn: str, error: Exception) -> ConfigurationError:
    # asyncpg sends a URL's query parameters it does not know (golang-migrate's
    # x-migrations-table, a typo) to the server as settings, which refuses them.
    return ConfigurationError(
        f"{libpq.describe(dsn)}: the server refused a setting at start-up: "
        f"{scrub(str(error), dsn)}; a query parameter of the URL that is not a connection "
        "option (host, port, sslmode, ...) is sent to the server as a setting: remove it "
        "from the URL (another tool's option, such as golang-migrate's x-..., means "
        "nothing here), or correct its value"
    )


def _invalid(dsn: str, error: Exception) -> ConfigurationError:
    # The parser's own words may quote a fragment of a misparsed password, which no
    # spelling of it matches: with a password in play, name only the class.
    why = type(error).__name__ if secrets_of(dsn) else scrub(str(error), dsn)
    return ConfigurationError(
        f"invalid database URL {redact(dsn)} ({why}); use "
        "postgresql://user:password@host:5432/dbname, with @ : / ? # % in the "
        "password percent-encoded (%40 %3A %2F %3F %23 %25)"
    )


def is_connection_lost(error: BaseException) -> bool:
    """True for an error that means the connection died, whatever was running on it: the
    codes causes.py gives to the connection (08, 57P01-57P04: pg_terminate_backend, a
    shutdown, a crash). A server setting that ends the session (transaction_timeout,
    idle_session_timeout) is not among them: reconnecting would meet it again."""
    from natlangchain_migrate.causes import Cause, classify, server_error

    told = server_error(error)
    if told is not None:
        return classify(told.sqlstate).cause is Cause.CONNECTION
    return isinstance(error, ConnectionError)


def cleanup_scope() -> anyio.CancelScope:
    """A scope for cleaning up after an error or a cancellation (SIGTERM): shielded from
    the cancellation, but bounded, so a server that stopped answering cannot keep the
    process past a container's grace period."""
    import anyio  # error paths only: the success path imports no anyio

    return anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLEANUP_S)


async def despite_cancellation(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if this task is cancelled meanwhile, then let the
    cancellation through: the success path's ``cleanup_scope``.

    Plain asyncio (a shielded task, awaited again after each cancellation, which also
    covers anyio's repeated delivery): the release after every successful run would
    otherwise pay for importing anyio's asyncio backend, about 15 ms of a start-up.
    Unbounded, so use it only for one quick statement.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


async def end_interrupted_transaction(conn: asyncpg.Connection) -> None:
    """End whatever transaction an interrupted statement left open or aborted.

    Unconditional: after a cancellation the driver learns the transaction state
    only when the server answers the cancelled query, which this waits for; a
    ROLLBACK outside a transaction is a harmless warning.
    """
    await conn.execute("ROLLBACK")


def resolve_dsn(dsn: str | None) -> str:
    """The DSN given, else DATABASE_URL; an error that says how to set one if neither.

    An empty value is an error, never a default: it is what an unresolved secret gives.
    """
    if dsn == "" or (dsn is None and os.environ.get("DATABASE_URL") == ""):
        instead = (  # what an unset DATABASE_URL falls back to
            libpq.describe(libpq.ENVIRONMENT_DSN)
            if libpq.names_a_server()
            else "the embedded server"
        )
        raise ConfigurationError(
            "the database setting is set but empty (DATABASE_URL, --database-url or dsn=; an "
            "unresolved secret?): set it to postgresql://user:password@host:5432/dbname, or "
            f"unset DATABASE_URL to use {instead}"
        )
    resolved = dsn or os.environ.get("DATABASE_URL")
    if not resolved and libpq.names_a_server():
        return libpq.ENVIRONMENT_DSN  # asyncpg reads PGHOST, PGPORT, ... as libpq does
    if not resolved:
        raise ConfigurationError(
            "no database given: set DATABASE_URL, PGSERVICE (a service of pg_service.conf) "
            "or PGHOST (with PGPORT, PGUSER, PGDATABASE, PGPASSWORD as libpq reads them), or "
            "pass --database-url (dsn= or pool= in the library) "
            "(postgresql://user:password@host:5432/dbname)"
        )
    return resolved


class RunConnection:
    """The run's one connection, held for the whole run, and a second one on demand.

    The second connection comes from the caller's pool if one was given, else
    it is a connection of its own to the same DSN.
    """

    def __init__(self, conn: asyncpg.Connection, options: RunnerOptions, dsn: str | None) -> None:
        self.conn = conn
        self._options = options
        self._dsn = dsn

    @property
    def pid(self) -> int:
        """The server process of the run's connection (what pg_blocking_pids takes)."""
        return int(self.conn.get_server_pid())

    @asynccontextmanager
    async def second_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Another connection to the same database, for reading only (the watcher's): it
        holds no lock and no transaction, so on the way out its socket is dropped, which
        ends its session as a close does, without the close's round trip (and the
        import of anyio's backend for a shielded one, 10-15 ms) between the end of a
        long statement, which cancels the watcher, and the migration's next one."""
        if self._options.pool is not None:
            async with self._options.pool.acquire() as borrowed:
                yield cast(asyncpg.Connection, borrowed)
            return
        own = await connect(
            resolve_dsn(self._dsn), transaction_pooling=self._options.transaction_pooling
        )
        try:
            yield own
        finally:
            own.terminate()


@asynccontextmanager
async def open_run_connection(options: RunnerOptions) -> AsyncIterator[RunConnection]:
    """Yield the run's connection: one of our own, or one borrowed from the caller's pool."""
    if options.pool is not None:
        borrowed = await borrow(options.pool, wait=max(options.connect_wait, options.lock.wait))
        try:
            # The proxy behaves as the connection it wraps for everything we call.
            yield RunConnection(cast(asyncpg.Connection, borrowed), options, None)
        finally:
            await options.pool.release(borrowed)
        return
    dsn = resolve_dsn(options.dsn)
    log.info("connecting", source=libpq.source_of(dsn), target=libpq.describe(dsn))
    conn = await connect(
        dsn, wait=options.connect_wait, transaction_pooling=options.transaction_pooling
    )
    try:
        yield RunConnection(conn, options, dsn)
    except BaseException:
        await _close(conn)
        raise
    # A plain close on success: the bounded, shielded one needs anyio's asyncio backend,
    # whose first use costs an up-to-date start-up about 10 ms of imports.
    await conn.close()


async def borrow(pool: asyncpg.Pool, *, wait: float) -> asyncpg.pool.PoolConnectionProxy:
    """A connection from the caller's pool, waiting at most ``wait`` seconds (the larger of
    the connect wait and the lock wait) while the application holds all of them, and
    saying so once a second has gone by."""
    first = min(1.0, wait)
    try:
        return await pool.acquire(timeout=first)
    except TimeoutError:
        pass
    log.info(
        "pool_waiting",
        reason="every connection of the pool is in use",
        pool_size=pool.get_size(),
        max_size=pool.get_max_size(),
        wait_s=wait,
    )
    try:
        return await pool.acquire(timeout=max(wait - first, 0.001))
    except TimeoutError:
        raise DatabaseUnreachableError(
            f"no connection of the pool came free in {wait:g}s: the application holds all "
            f"{pool.get_max_size()} of them; give the pool one more (max_size), run migrate() "
            "before the application takes its connections, or raise lock_timeout= / wait="
        ) from None


async def _close(conn: asyncpg.Connection) -> None:
    """Close politely within the cleanup bound, else drop the socket: either way the
    server ends the session and frees its advisory lock."""
    with cleanup_scope() as scope:
        await conn.close()
    if scope.cancelled_caught or not conn.is_closed():
        conn.terminate()
