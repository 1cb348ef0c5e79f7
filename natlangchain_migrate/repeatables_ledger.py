"""The repeatables ledger: schema_repeatables, beside schema_migrations, says which
``R__`` file was last applied with which checksum, when, by whom and by which release.

A mixin of ``ledger.Ledger``: its rows, its ``release`` column and the upsert that records
a repeatable, apart from the versioned ledger they sit beside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from natlangchain_migrate.events import log
from natlangchain_migrate.plan import AppliedMigration
from natlangchain_migrate.sqltext import literal

if TYPE_CHECKING:
    from natlangchain_migrate.discovery import Migration

REPEATABLES_TABLE = "schema_repeatables"  # the ledger of R__ files
# The column of the ledger's one read that carries the applied repeatables.
REPEATABLES_COLUMN = "natlangchain_repeatables"


class RepeatablesLedger:
    """Reads and writes schema_repeatables (``repeatables_table``, set by ``Ledger``)."""

    repeatables_table: str

    @property
    def _repeatables_select(self) -> str:
        """Each applied repeatable as ``name checksum release`` (release empty when NULL).

        The release is read through to_jsonb: a table made before the column existed, and
        not yet upgraded by a run under the lock, reads as NULL releases instead of failing.
        """
        return (
            "SELECT r.name || ' ' || r.checksum || ' ' || coalesce(to_jsonb(r) ->> 'release', '') "
            f"FROM {self.repeatables_table} r"
        )

    async def repeatable_rows(self, conn: asyncpg.Connection) -> list[AppliedMigration]:
        """Every applied repeatable with its time, duration and runner (for --status).

        Looks the table up first: a readiness probe's --check must not leave an error in
        the server's log on every database that never had a repeatable.
        """
        if await conn.fetchval("SELECT to_regclass($1)", self.repeatables_table) is None:
            return []
        records = await conn.fetch(f"SELECT * FROM {self.repeatables_table} ORDER BY name")
        return [
            AppliedMigration(
                version=-1,
                name=record["name"],
                applied_at=record["applied_at"],
                checksum=record["checksum"],
                execution_ms=record["execution_ms"],
                applied_by=record["applied_by"],
                release=record.get("release"),
            )
            for record in records
        ]

    async def ensure_repeatables(self, conn: asyncpg.Connection) -> None:
        """Create schema_repeatables beside the ledger if absent, or add its ``release``
        column to one made before it existed (under the lock, after ``ensure``). Made only
        once a folder has R__ files. ``release`` is nullable and last: an older version of
        this package reads the table by name and checksum (or ``SELECT *``) and its upsert
        names its columns, so it still works; its rows keep a NULL or stale release."""
        present = {
            row["attname"]
            for row in await conn.fetch(
                "SELECT attname FROM pg_attribute "
                "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                self.repeatables_table,
            )
        }
        if not present:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.repeatables_table} ("
                " name text PRIMARY KEY,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
                " execution_ms double precision,"
                " applied_by text,"
                " release bigint); "
                f"COMMENT ON TABLE {self.repeatables_table} IS "
                "'Repeatable migrations (R__name.sql): the checksum each was last applied with'; "
                f"COMMENT ON COLUMN {self.repeatables_table}.release IS "
                "'The release (highest migration version) whose runner applied it'"
            )
        elif "release" not in present:
            await conn.execute(
                f"ALTER TABLE {self.repeatables_table} ADD COLUMN IF NOT EXISTS release bigint"
            )
            log.info("ledger_adopted", table=REPEATABLES_TABLE, columns_added=["release"])

    def record_repeatable_sql(
        self, repeatable: Migration, *, applied_by: str, release: int | None
    ) -> str:
        """A repeatable's row, as one literal upsert sent in the file's own message.
        ``release`` is the applying runner's highest version (NULL without one)."""
        recorded = "NULL" if release is None else str(int(release))
        return (
            f"INSERT INTO {self.repeatables_table} "
            "(name, checksum, applied_at, execution_ms, applied_by, release) "
            f"VALUES ({literal(repeatable.name)}, {literal(repeatable.checksum)}, "
            "clock_timestamp(), "
            "extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000, "
            f"{literal(applied_by)}, {recorded}) "
            "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, "
            " applied_at = EXCLUDED.applied_at, execution_ms = EXCLUDED.execution_ms, "
            " applied_by = EXCLUDED.applied_by, release = EXCLUDED.release"
        )

    async def hand_back_repeatable(self, conn: asyncpg.Connection, name: str) -> None:
        """Clear the release a newer release recorded for a repeatable (repair from an
        older release once the newer one is gone): the next run re-applies this file."""
        await conn.execute(
            f"UPDATE {self.repeatables_table} SET release = NULL WHERE name = $1", name
        )

    async def remove_repeatable(self, conn: asyncpg.Connection, name: str) -> None:
        """Forget a repeatable whose file is gone (repair)."""
        await conn.execute(f"DELETE FROM {self.repeatables_table} WHERE name = $1", name)


def pairs(record: asyncpg.Record) -> list[AppliedMigration]:
    """The ``name checksum release`` items of the read's repeatables column, as rows."""
    rows = []
    for item in record[REPEATABLES_COLUMN] or ():
        name, value, release = item.split(" ", 2)
        rows.append(
            AppliedMigration(
                version=-1, name=name, checksum=value, release=int(release) if release else None
            )
        )
    return rows
