"""One attempt at running SQL of a migration (up or down): the SET statements it runs
under, sending it with a watcher beside it, retrying it after PostgreSQL's lock_timeout,
and what a server error means.

Every up file and every down file goes through here, so both directions get the same
lock_timeout, retries, statement_timeout and progress watcher.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from natlangchain_migrate import local_settings
from natlangchain_migrate.causes import Cause, classify, server_error
from natlangchain_migrate.connection import RunConnection, is_connection_lost
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.durations import seconds
from natlangchain_migrate.errors import MigrateError, PrerequisiteError
from natlangchain_migrate.events import log
from natlangchain_migrate.failures import (
    connection_lost,
    locate,
    lock_retries_exhausted,
    migration_failed,
    privilege_missing,
)
from natlangchain_migrate.results import MigrationResult
from natlangchain_migrate.settings import ExecutionOptions, ServerFacts
from natlangchain_migrate.watch import Watcher

T = TypeVar("T")

_CREATE_EXTENSION = re.compile(
    r"\bCREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|[\w$-]+)", re.IGNORECASE
)

RESET_SETTINGS_SQL = (
    "RESET lock_timeout; RESET statement_timeout; RESET search_path; RESET synchronous_commit"
)


def reset_settings_sql(*, transaction_timeout: bool = False) -> str:
    """RESET of what ``settings_sql`` set at session level."""
    return RESET_SETTINGS_SQL + ("; RESET transaction_timeout" if transaction_timeout else "")


def settings_sql(
    migration: Migration,
    execution: ExecutionOptions,
    search_path: str,
    *,
    local: bool,
    durable: bool = True,
    transaction_timeout: bool = False,
) -> str:
    """The SET statements a migration runs under (file directives beat run settings).

    A role's or database's statement_timeout, and transaction_timeout (PostgreSQL 17+,
    ``transaction_timeout`` true where the server has it), are turned off unless the run
    or the file sets them: the run's own settings bound a migration, not a limit meant
    for the application's sessions."""
    scope = "SET LOCAL" if local else "SET"
    pg_lock_timeout = migration.directives.pg_lock_timeout or execution.pg_lock_timeout
    statement_timeout = migration.directives.statement_timeout or execution.statement_timeout
    parts = [
        f"{scope} lock_timeout = '{pg_lock_timeout}'",
        f"{scope} statement_timeout = '{statement_timeout or 0}'",
        f"{scope} search_path = {search_path}",
    ]
    if transaction_timeout:
        parts.append(f"{scope} transaction_timeout = 0")
    if not durable:
        parts.append(f"{scope} synchronous_commit = off")
    return "; ".join(parts) + ";\n"


async def read_server_facts(conn: asyncpg.Connection, schema: str) -> ServerFacts:
    """What the server says a migration's search_path needs: where the database's
    extensions live, other than ``schema`` and pg_catalog.

    Migrations always run in ``schema`` (``--schema``, ``schema=``), whatever search_path
    the connection came with (a role's or database's setting, ``options=-csearch_path``):
    one setting decides where tables go, on every server. When the connection's own
    search_path points elsewhere, the run says so, once, with the flag that follows it.
    """
    # nspname::text: a name[] would cost asyncpg a type introspection query on every new
    # connection (about 10 ms on a new database, whose catalogs are not cached yet).
    rows = await conn.fetch(
        "SELECT ARRAY(SELECT DISTINCT n.nspname::text FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', $1) ORDER BY 1) AS schemas, "
        "current_schema() AS current, current_setting('search_path') AS search_path, "
        "(SELECT source FROM pg_settings WHERE name = 'search_path') AS source",
        schema,
    )
    (row,) = rows
    chosen = row["source"] in _CHOSEN_SOURCES  # set for this role, database or client
    if chosen and row["current"] is not None and row["current"] != schema:
        log.warning(
            "search_path_overridden",
            connection_search_path=row["search_path"],
            connection_schema=row["current"],
            schema=schema,
            hint=f"migrations run in schema {schema} (--schema, schema=), not in "
            f"{row['current']}, which the connection's search_path names; to migrate into "
            f"it, pass --schema {row['current']}",
        )
    return ServerFacts(
        tuple(row["schemas"]),
        transaction_timeout=conn.get_server_version().major >= 17,
    )


# Where a search_path comes from when someone chose it for these sessions (pg_settings.source).
_CHOSEN_SOURCES = frozenset({"database", "user", "database user", "client"})


def retry_pause(execution: ExecutionOptions, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt``: doubling, with +-50% jitter."""
    return float(execution.retry_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


class Blocked(Exception):
    """An attempt cancelled by lock_timeout (55P03); rolled back, to be tried again."""

    def __init__(self, migration: Migration, blockers: Sequence[dict[str, object]]) -> None:
        super().__init__(migration.name)
        self.migration = migration
        self.blockers = blockers


class Attempts:
    """Sends a migration's SQL on the run's connection under the run's execution settings.

    ``applied`` is the run's list of results so far, which every error carries;
    ``schema`` is the target schema, which a privilege error's GRANT names.
    """

    def __init__(
        self,
        connection: RunConnection,
        execution: ExecutionOptions,
        *,
        schema: str,
        applied: list[MigrationResult],
    ) -> None:
        self.connection = connection
        self.conn = connection.conn
        self.execution = execution
        self.schema = schema
        self.applied = applied

    async def send(
        self,
        migration: Migration,
        script: str,
        *,
        in_open_transaction: bool = False,
        journalled: bool = False,
        index_name: str | None = None,
        call: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Send one message (or make ``call``: a COPY's rows) with a watcher beside it.

        Raises Blocked for a lock_timeout, ConnectionLostError for a dead connection,
        else the server's error, with any transaction the message opened rolled back
        (unless it runs inside an ``in_open_transaction`` of the caller's).
        """
        pg_lock_timeout = migration.directives.pg_lock_timeout or self.execution.pg_lock_timeout
        watcher = Watcher(
            self.connection,
            pg_lock_timeout_s=seconds(pg_lock_timeout),
            progress_interval=self.execution.progress_interval,
            index_name=index_name,
            migration=(migration.version, migration.name, migration.filename),
        )
        try:
            await watcher.watch(call or (lambda: self.conn.execute(script)))
        except Exception as raised:
            error = server_error(raised) or raised
            if (
                self.conn.is_closed()
                and isinstance(error, asyncpg.PostgresError)
                and classify(error.sqlstate).cause is not Cause.CONNECTION
            ):
                # The server ended the session for a reason of its own (FATAL:
                # transaction_timeout, ...): a server limit, not a lost connection.
                raise migration_failed(
                    migration,
                    error,
                    offset=0,
                    applied=self.applied,
                    location=migration.filename,
                    outcome=(
                        "the statements the ledger journalled stay applied; the next run "
                        "resumes after them"
                        if journalled
                        else "the server rolled it back and it was not recorded"
                    ),
                ) from raised
            if is_connection_lost(error) or self.conn.is_closed():
                raise connection_lost(
                    migration, error, applied=self.applied, journalled=journalled
                ) from raised
            if not isinstance(error, asyncpg.PostgresError):
                raise
            if not in_open_transaction and self.conn.is_in_transaction():
                await self.conn.execute("ROLLBACK")
            if isinstance(error, asyncpg.LockNotAvailableError):
                raise Blocked(migration, watcher.blockers) from error
            if error is not raised:
                raise error from raised
            raise

    async def send_one_commit(
        self,
        migration: Migration,
        prefix: str,
        body: str,
        *,
        savepoint: str | None,
        replay: bool = False,
    ) -> None:
        """Send ``prefix`` (the settings) and ``body`` as one commit: in a transaction of
        their own or, with ``savepoint`` (transaction lock mode), in a savepoint of the
        lock's transaction (``send_in_savepoint``), with what it sets put back at its end.
        Blocked goes on; a server error becomes the file's error (``replay``: its
        statement found by replay)."""
        if savepoint is not None:  # what it sets ends with it (local_settings.py)
            settings, restore = local_settings.around(prefix, migration.sql)
            await self.send_in_savepoint(
                migration, settings, f"{body}{restore}", savepoint=savepoint, replay=replay
            )
            return
        prefix = f"BEGIN;\n{prefix}"
        try:
            await self.send(migration, f"{prefix}{body}COMMIT;")
        except asyncpg.PostgresError as error:
            raise await self.failure(
                migration, error, offset=-len(prefix), replay=prefix if replay else None
            ) from error

    async def send_in_savepoint(
        self,
        migration: Migration,
        settings: str,
        body: str,
        *,
        savepoint: str,
        replay: bool = True,
    ) -> None:
        """Send ``settings`` and ``body`` in one message, in ``savepoint`` of the caller's
        open transaction (transaction lock mode), released at its end: one SAVEPOINT
        and one RELEASE more in the message. A failed attempt is rolled back to the
        savepoint alone, the transaction still open: Blocked goes on; a server error
        becomes the file's error, its statement found by a replay there (``replay``),
        as in a transaction of its own."""
        opening = f"SAVEPOINT {savepoint};\n"
        script = f"{opening}{settings}{body};\nRELEASE SAVEPOINT {savepoint};"
        try:
            await self.send(migration, script, in_open_transaction=True)
        except (Blocked, asyncpg.PostgresError) as error:
            if not self.conn.is_closed():
                await self.conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            if isinstance(error, Blocked):
                raise
            raise await self.failure(
                migration,
                error,
                offset=-len(opening + settings),
                replay=settings if replay else None,
                savepoint=savepoint,
            ) from error

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt``; after a lock_timeout, pause (growing, jittered) and run it again,
        ``lock_retries`` times at most."""
        attempts = self.execution.lock_retries + 1
        number = 1
        while True:
            try:
                return await attempt()
            except Blocked as blocked:
                if number == attempts:
                    raise lock_retries_exhausted(
                        blocked.migration, attempts, blocked.blockers, self.applied
                    ) from blocked.__cause__
                pause = retry_pause(self.execution, number)
                log.warning(
                    "migration_lock_timeout",
                    version=blocked.migration.version,
                    name=blocked.migration.name,
                    file=blocked.migration.filename,
                    attempt=number,
                    of=attempts,
                    retry_in_s=round(pause, 2),
                    blockers=list(blocked.blockers),
                )
                await asyncio.sleep(pause)
                number += 1

    async def failure(
        self,
        migration: Migration,
        error: asyncpg.PostgresError,
        *,
        offset: int,
        statement: int | None = None,
        replay: str | None = None,
        savepoint: str | None = None,
    ) -> MigrateError:
        """What a server error in a migration means, as the error to raise (the table in
        causes.py, with the facts a privilege or a missing extension needs). ``statement``
        is the failing statement of a no-transaction file, whose earlier ones stay;
        ``replay`` is the prefix (BEGIN and settings, or the settings alone in
        ``savepoint`` of the caller's transaction) a transactional file ran under, to
        find the failing statement of a runtime error by running it again, rolled back."""
        if error.sqlstate == "42501":
            return await self._privilege_failure(migration, error, offset)
        if error.sqlstate in ("0A000", "58P01"):
            missing = await self._extensions_not_available(migration)
            if missing:
                outcome = (
                    f"nothing of {migration.name} was kept"
                    if statement is None
                    else f"the run resumes at statement {statement}"
                )
                return PrerequisiteError(
                    f"{migration.filename}: {error.sqlstate} {error.message}. The file creates "
                    f"the extension {', '.join(repr(name) for name in missing)}, which this "
                    "server does not have (not in pg_available_extensions): install it on "
                    "the server (pgvector: apt install postgresql-<major>-pgvector, or the "
                    "pgvector/pgvector image), or leave this migration out with --skip "
                    f"{migration.version}; {outcome}"
                )
        location = None
        if replay is not None and statement is None:
            from natlangchain_migrate.replay import failing_statement

            found = await failing_statement(
                self.conn, migration, error, replay, savepoint=savepoint
            )
            if found is not None:
                location = locate(migration, error, offset=offset, statement=found)
        return migration_failed(
            migration,
            error,
            offset=offset,
            applied=self.applied,
            rolled_back=statement is None,
            statement=statement,
            location=location,
        )

    async def _extensions_not_available(self, migration: Migration) -> list[str]:
        """The extensions the file creates that the server does not offer."""
        found = _CREATE_EXTENSION.findall(migration.sql)
        names = sorted({name.strip('"').lower() for name in found})
        if not names or self.conn.is_closed():
            return []
        rows = await self.conn.fetch(
            "SELECT name FROM unnest($1::text[]) AS name "
            "WHERE name NOT IN (SELECT e.name FROM pg_available_extensions e) ORDER BY 1",
            names,
        )
        return [row["name"] for row in rows]

    async def _privilege_failure(
        self, migration: Migration, error: asyncpg.PostgresError, offset: int
    ) -> MigrateError:
        (row,) = await self.conn.fetch(
            "SELECT current_user AS role, current_database() AS database, "
            "ARRAY(SELECT unnest($1::text[]) EXCEPT SELECT extname FROM pg_extension) AS missing",
            [requirement.name for requirement in migration.directives.requires_extensions],
        )
        return privilege_missing(
            migration,
            error,
            offset=offset,
            role=row["role"],
            database=row["database"],
            schema=self.schema,
            missing_extensions=sorted(row["missing"]),
        )
