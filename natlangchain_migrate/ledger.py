"""The ledger: the schema_migrations table that says what has been applied.

It keeps the seed's columns (version, name, applied_at) and adds checksum,
execution_ms, applied_by, and a journal for migrations that run without a
transaction (complete, statements_done, last_error). A table made by the
seed's old migrate.py is adopted by adding the missing columns in place.

The version column is the seed's integer until a folder has a version above it
(a timestamp): then ``ensure``, under the migration lock, widens it in place in one
ALTER (atomic; the table is small) to bigint, or to numeric(38,0) for versions beyond
bigint's 19 digits (pop's 20). Not text: numbers order as numbers and compare with the
integer parameters an older release sends; bigint where it suffices because an older
release reads it as an int.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import ConfigurationError, ForeignLedgerError
from natlangchain_migrate.foreign import (
    BESIDE_FOREIGN,
    ForeignLedger,
    adopt_advice,
    look_where_absent,
    schema_migrations_tool,
)
from natlangchain_migrate.plan import AppliedMigration
from natlangchain_migrate.repeatables_ledger import (
    REPEATABLES_COLUMN,
    REPEATABLES_TABLE,
    RepeatablesLedger,
    pairs,
)
from natlangchain_migrate.sqltext import literal, quote_ident, text_array
from natlangchain_migrate.versions import column_type, needs_widening

# The ledger's tables, beside each other in the target schema.
LEDGER_TABLE = "schema_migrations"
# applied_by of a row written by ``baseline``: recorded, never run.
BASELINE = "baseline"

_ADDED_COLUMNS = {
    "checksum": "text",
    "execution_ms": "double precision",
    "applied_by": "text",
    "complete": "boolean NOT NULL DEFAULT true",
    "statements_done": "integer NOT NULL DEFAULT 0",
    "last_error": "text",
}


class LedgerSnapshot:
    """What one read of the ledger found, and whether the server is a standby."""

    def __init__(
        self,
        rows: list[AppliedMigration],
        *,
        exists: bool,
        standby: bool,
        repeatables: list[AppliedMigration] | None = None,
        has_schema: bool | None = None,
    ) -> None:
        self.rows = rows
        self.exists = exists
        self.standby = standby
        # Whether the schema exists, when the read looked (a missing ledger's read does).
        self.has_schema = has_schema
        # Applied R__ files (name and checksum only), when the read asked for them.
        self.repeatables = repeatables or []


def _foreign(found: ForeignLedger, schema: str) -> ForeignLedgerError:
    return ForeignLedgerError(
        adopt_advice(found, schema),
        tool=found.tool,
        table=found.table,
        schema=schema,
        found_in=found.schema,
    )


class Ledger(RepeatablesLedger):
    """Reads and writes schema_migrations in one schema (and, through RepeatablesLedger,
    schema_repeatables beside it)."""

    def __init__(self, schema: str = "public", table: str = LEDGER_TABLE) -> None:
        self.schema = schema
        self.table = f"{quote_ident(schema)}.{quote_ident(table)}"
        self.repeatables_table = f"{quote_ident(schema)}.{quote_ident(REPEATABLES_TABLE)}"

    async def read(self, conn: asyncpg.Connection, *, repeatables: bool = False) -> LedgerSnapshot:
        """Read every row, and whether the server is a standby, in one query.

        With ``repeatables`` (there are R__ files), the same one query also brings the
        applied repeatables' names and checksums.

        This is the whole database cost of an up-to-date start-up. ``SELECT *``
        reads whatever shape the table has: the seed's three columns or ours.
        No ORDER BY: on a new backend, planning the sort costs more than the query.
        """
        if repeatables:
            return await self._read_with_repeatables(conn)
        try:
            records = await conn.fetch(
                f"SELECT m.*, pg_is_in_recovery() AS standby FROM {self.table} m"
            )
        except asyncpg.UndefinedTableError:
            # One query: another tool's ledger, the standby, and whether the schema exists.
            absent = await look_where_absent(conn, self.schema)
            if absent.foreign is not None:
                raise _foreign(absent.foreign, self.schema) from None
            return LedgerSnapshot(
                [], exists=False, standby=absent.standby, has_schema=absent.has_schema
            )
        if await self._beside_foreign(conn, records):
            return await self.read(conn)
        if records:
            self._check_shape(set(records[0].keys()))
            standby = bool(records[0]["standby"])
        else:  # the same one extra query also brings an empty table's columns
            (record,) = await conn.fetch(_EMPTY_LEDGER_SQL, self.table)
            standby = bool(record["standby"])
            self._check_shape(set(record["columns"]))
        rows = sorted((_row(record) for record in records), key=lambda row: row.version)
        return LedgerSnapshot(rows, exists=True, standby=standby)

    async def digest(self, conn: asyncpg.Connection) -> str | None:
        """SHA-256 of every row's ``version:checksum:complete``, in version order, in one
        query returning one row: what an up-to-date start-up compares with the checksum
        manifest (``manifest.Manifest.ledger_digest``). None when there is no ledger, or
        the seed's old one without checksums."""
        try:
            digest: str | None = await conn.fetchval(
                "SELECT encode(sha256(convert_to(string_agg(version::text || ':' || "
                "coalesce(checksum, '') || ':' || complete::text, ',' ORDER BY version), "
                f"'UTF8')), 'hex') FROM {self.table}"
            )
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            return None
        return digest

    async def _read_with_repeatables(self, conn: asyncpg.Connection) -> LedgerSnapshot:
        """``read`` plus the applied repeatables, still one query when both tables exist.

        The repeatables travel as one text array on the first row only (row_number()
        without ORDER BY costs no sort). Either table missing: every repeatable is
        pending, so the extra query of the fallback is on a path that applies anyway.
        """
        try:
            records = await conn.fetch(
                f"SELECT m.*, pg_is_in_recovery() AS standby, CASE WHEN row_number() OVER () = 1 "
                f"THEN ARRAY({self._repeatables_select}) END AS {REPEATABLES_COLUMN} "
                f"FROM {self.table} m"
            )
        except asyncpg.UndefinedTableError:
            return await self.read(conn)
        if await self._beside_foreign(conn, records):
            return await self.read(conn, repeatables=True)
        if records:
            self._check_shape(set(records[0].keys()))
        if not records:
            try:
                (record,) = await conn.fetch(
                    f"SELECT pg_is_in_recovery() AS standby, "
                    f"ARRAY({self._repeatables_select}) AS {REPEATABLES_COLUMN}"
                )
            except asyncpg.UndefinedTableError:
                return await self.read(conn)
            return LedgerSnapshot(
                [], exists=True, standby=bool(record["standby"]), repeatables=pairs(record)
            )
        rows = sorted((_row(record) for record in records), key=lambda row: row.version)
        first = next(record for record in records if record[REPEATABLES_COLUMN] is not None)
        return LedgerSnapshot(
            rows, exists=True, standby=bool(records[0]["standby"]), repeatables=pairs(first)
        )

    async def _beside_foreign(
        self, conn: asyncpg.Connection, records: list[asyncpg.Record]
    ) -> bool:
        """Whether schema_migrations is dbmate's or golang-migrate's and ours lives beside it
        (``natlangchain_migrations``, made by ``adopt``): then this ledger moves there.
        Not adopted yet: the error says how. Costs nothing when the table is ours."""
        if records and "name" in records[0]:
            return False
        if not self.table.endswith(quote_ident(LEDGER_TABLE)):
            return False
        columns = (
            set(records[0].keys())
            if records
            else {
                row["attname"]
                for row in await conn.fetch(
                    "SELECT attname FROM pg_attribute "
                    "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                    self.table,
                )
            }
        )
        tool = schema_migrations_tool(columns)
        if tool is None:
            return False
        beside = f"{quote_ident(self.schema)}.{quote_ident(BESIDE_FOREIGN)}"
        if await conn.fetchval("SELECT to_regclass($1)", beside) is None:
            found = ForeignLedger(tool, LEDGER_TABLE)
            raise _foreign(found, self.schema)
        self.table = beside
        return True

    async def record_baseline(
        self, conn: asyncpg.Connection, migrations: list[Migration], by: str = BASELINE
    ) -> None:
        """Record ``migrations`` as applied without running them: their checksums, applied_by
        'baseline' (or ``adopt:TOOL``), no execution time. Rows already there are kept."""
        await conn.executemany(
            f"INSERT INTO {self.table} (version, name, applied_at, checksum, execution_ms, "
            " applied_by, complete, statements_done) "
            "VALUES ($1::text::numeric, $2, clock_timestamp(), $3, NULL, $4, true, 0) "
            "ON CONFLICT (version) DO NOTHING",
            [(str(m.version), m.name, m.checksum, by) for m in migrations],
        )

    async def ensure(self, conn: asyncpg.Connection, *, widest: int = 0) -> list[str]:
        """Create the table (and its schema) if absent, or add our columns to the seed's old one.

        Returns the columns added to an existing table (empty when it was
        created or already complete), with ``version`` among them when its column was
        widened for ``widest`` (the highest version of the folder). Call it while holding
        the migration lock: concurrent CREATE TABLE IF NOT EXISTS can fail on
        PostgreSQL's catalog, and two widenings would each rewrite the table.
        """
        columns_found = {
            row["attname"]: row["kind"]
            for row in await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS kind FROM pg_attribute "
                "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                self.table,
            )
        }
        present = set(columns_found)
        if present:
            self._check_shape(present)
        if not present:
            await conn.execute(await self.create_sql(conn, widest=widest))
            return []
        missing = [column for column in _ADDED_COLUMNS if column not in present]
        if missing:
            additions = ", ".join(
                f"ADD COLUMN IF NOT EXISTS {column} {_ADDED_COLUMNS[column]}" for column in missing
            )
            await conn.execute(f"ALTER TABLE {self.table} {additions}")
        if wider := needs_widening(columns_found.get("version"), widest):
            await conn.execute(f"ALTER TABLE {self.table} ALTER COLUMN version TYPE {wider}")
            missing.append("version")
        return missing

    async def create_sql(
        self, conn: asyncpg.Connection, *, widest: int = 0, has_schema: bool | None = None
    ) -> str:
        """The statements that create the table (and its schema when absent), for
        ``ensure``, or to run at the start of a baseline file's transaction (apply.py).
        ``has_schema``: whether the schema exists, when a read under the lock just saw."""
        columns = "".join(f", {name} {kind}" for name, kind in _ADDED_COLUMNS.items())
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        # exists: a role with only USAGE, CREATE on its schema must not be refused.
        if has_schema is None:
            has_schema = await conn.fetchval(
                "SELECT true FROM pg_namespace WHERE nspname = $1", self.schema
            )
        create_schema = "" if has_schema else f"CREATE SCHEMA {quote_ident(self.schema)}; "
        return (
            f"{create_schema}"
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            f" version {column_type(widest)} PRIMARY KEY,"
            " name varchar(255) NOT NULL,"
            f" applied_at timestamptz DEFAULT CURRENT_TIMESTAMP{columns}); "
            f"COMMENT ON TABLE {self.table} IS 'Migration version tracking'"
        )

    def _check_shape(self, columns: set[str]) -> None:
        """Refuse another tool's ``schema_migrations`` (same name, other columns)."""
        if {"version", "name", "applied_at"} <= columns:
            return
        if {"version", "dirty"} <= columns:
            tool = "golang-migrate (version bigint, dirty boolean)"
        elif columns - {"standby", REPEATABLES_COLUMN} == {"version"}:
            tool = "dbmate (a single version column)"
        else:
            shown = ", ".join(sorted(columns - {"standby", REPEATABLES_COLUMN}))
            tool = f"another tool (columns: {shown})"
        raise ConfigurationError(
            f"{self.table} was made by {tool}, not by natlangchain-migrate, whose ledger "
            "has version, name and applied_at; nothing was changed. Keep migrating this "
            "schema with that tool, or point this one at another schema (--schema), or "
            "rename that table and record what it applied with: natlangchain-migrate "
            "baseline N"
        )

    def _upsert(self, version: str, name: str, checksum: str, ms: str, by: str) -> str:
        return (
            f"INSERT INTO {self.table} "
            "(version, name, applied_at, checksum, execution_ms, applied_by, complete, "
            " statements_done, last_error) "
            f"VALUES ({version}, {name}, clock_timestamp(), {checksum}, {ms}, {by}, true, 0, NULL) "
            "ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, "
            " applied_at = EXCLUDED.applied_at, checksum = EXCLUDED.checksum, "
            " execution_ms = EXCLUDED.execution_ms, "
            " applied_by = EXCLUDED.applied_by, complete = true, statements_done = 0, "
            " last_error = NULL"
        )

    def record_sql(
        self,
        migration: Migration,
        *,
        applied_by: str,
        since: str = "statement_timestamp()",
        checksum: str | None = None,
    ) -> str:
        """The same upsert as one literal statement, to send in the migration's own message.
        ``checksum`` stands in for the file's when given (a streamed file's, from its read).

        ``execution_ms`` is measured by the server: the time since the message
        that carries the file arrived (statement_timestamp()), or ``since`` (a streamed
        file's transaction began before its many messages: transaction_timestamp()).
        """
        return self._upsert(
            str(int(migration.version)),
            literal(migration.name),
            literal(migration.checksum if checksum is None else checksum),
            f"extract(epoch FROM clock_timestamp() - {since}) * 1000",
            literal(applied_by),
        )

    def record_many_sql(
        self, migrations: Sequence[Migration], *, applied_by: str, since: str
    ) -> str:
        """One INSERT of many rows (a baseline file's: baseline_files.ledger_rows), each
        with the time since ``since``; a row already there fails it, and the file with it.
        The rows travel as three array constants unnested, not as a VALUES list: about
        6 ms for 1000 rows where VALUES took 29 ms on a new database."""
        ms = f"extract(epoch FROM clock_timestamp() - {since}) * 1000"
        versions = text_array([str(int(m.version)) for m in migrations])
        names = text_array([m.name for m in migrations])
        checksums = text_array([m.checksum for m in migrations])
        return (
            f"INSERT INTO {self.table} (version, name, applied_at, checksum, execution_ms, "
            f"applied_by, complete, statements_done) SELECT v::numeric, n, clock_timestamp(), "
            f"c, {ms}, {literal(applied_by)}, true, 0 "
            f"FROM unnest({versions}, {names}, {checksums}) AS rows(v, n, c)"
        )

    def step_sql(self, migration: Migration, *, done: int, applied_by: str) -> str:
        """The journal step of a no-transaction migration, as one literal statement.

        It travels in the same transaction as the statement it records, so the
        two commit together or not at all. An upsert: the first step creates the
        (incomplete) row.
        """
        return (
            f"INSERT INTO {self.table} "
            "(version, name, applied_at, checksum, applied_by, complete, statements_done) "
            f"VALUES ({int(migration.version)}, {literal(migration.name)}, clock_timestamp(), "
            f"{literal(migration.checksum)}, {literal(applied_by)}, false, {int(done)}) "
            "ON CONFLICT (version) DO UPDATE SET statements_done = EXCLUDED.statements_done, "
            " last_error = NULL, checksum = EXCLUDED.checksum, applied_by = EXCLUDED.applied_by"
        )

    def prepare_step_sql(self, name: str) -> str:
        """PREPARE the journal step for a row that exists, once per no-transaction file: a
        plain UPDATE with its plan kept, the cheapest step there is."""
        return (
            f"PREPARE {name}(numeric, integer) AS "
            f"UPDATE {self.table} SET statements_done = $2 WHERE version = $1"
        )

    def complete_sql(self, migration: Migration, *, applied_by: str, execution_ms: float) -> str:
        """Mark a no-transaction migration complete, as one literal statement."""
        return self._upsert(
            str(int(migration.version)),
            literal(migration.name),
            literal(migration.checksum),
            repr(float(execution_ms)),
            literal(applied_by),
        )

    async def journal_failure(
        self,
        conn: asyncpg.Connection,
        migration: Migration,
        *,
        done: int,
        error: str,
        applied_by: str,
    ) -> None:
        """Keep an incomplete row with the statements done and the error that stopped it."""
        await conn.execute(
            f"INSERT INTO {self.table} "
            "(version, name, applied_at, checksum, applied_by, complete, statements_done, "
            " last_error) "
            "VALUES ($1, $2, clock_timestamp(), $3, $4, false, $5, $6) "
            "ON CONFLICT (version) DO UPDATE SET statements_done = EXCLUDED.statements_done, "
            " last_error = EXCLUDED.last_error",
            migration.version,
            migration.name,
            migration.checksum,
            applied_by,
            done,
            error,
        )

    async def remove(self, conn: asyncpg.Connection, version: int) -> None:
        """Delete a version's row (rollback)."""
        await conn.execute(self.remove_sql(version))

    def remove_sql(self, version: int) -> str:
        """The DELETE of a version's row, to send with its down file in one message."""
        return f"DELETE FROM {self.table} WHERE version = {int(version)}"

    async def set_checksum(self, conn: asyncpg.Connection, version: int, value: str) -> None:
        """Store a file's current checksum for an applied version (repair)."""
        await conn.execute(
            f"UPDATE {self.table} SET checksum = $2 WHERE version = $1", version, value
        )


_EMPTY_LEDGER_SQL = (
    "SELECT pg_is_in_recovery() AS standby, ARRAY(SELECT attname::text FROM pg_attribute "
    "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped) AS columns"
)


def _row(record: asyncpg.Record) -> AppliedMigration:
    return AppliedMigration(
        version=int(record["version"]),  # numeric once widened: always an int here
        name=record["name"] or "",
        applied_at=record["applied_at"],
        checksum=record.get("checksum"),
        execution_ms=record.get("execution_ms"),
        applied_by=record.get("applied_by"),
        complete=record.get("complete", True) is not False,
        statements_done=record.get("statements_done") or 0,
        last_error=record.get("last_error"),
    )
