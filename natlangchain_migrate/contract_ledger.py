"""The ``schema_contracts`` table, and what rollback and repair do with it.

One row per contract part that ran, written in the same transaction as its SQL; a
rollback (undo.py) removes it with the part's undo file, a repair accepts an edited
file's checksum or forgets the row of a vanished one.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from natlangchain_migrate.contract_plan import (
    CONTRACTS_TABLE,
    ContractRow,
    ContractState,
    contract_part,
    contract_undo,
    plan_contracts,
)
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.events import log
from natlangchain_migrate.sqltext import literal, quote_ident
from natlangchain_migrate.versions import column_type, needs_widening


class ContractLedger:
    """Reads and writes ``schema_contracts`` in one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{quote_ident(schema)}.{quote_ident(CONTRACTS_TABLE)}"

    async def rows(self, conn: asyncpg.Connection) -> list[ContractRow]:
        """Every contract part that ran; none before the first (no table, no error logged)."""
        if await conn.fetchval("SELECT to_regclass($1)", self.table) is None:
            return []
        records = await conn.fetch(
            f"SELECT version, name, checksum, applied_at, execution_ms, forced FROM {self.table}"
        )
        return [ContractRow(int(record[0]), *record[1:]) for record in records]

    async def ensure(self, conn: asyncpg.Connection, *, widest: int = 0) -> None:
        """Create the table if absent (under the migration lock); its version column is
        widened as the ledger's is (ledger.py) when ``widest`` needs it."""
        kind = await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass($1) AND attname = 'version'",
            self.table,
        )
        if wider := needs_widening(kind, widest):
            await conn.execute(f"ALTER TABLE {self.table} ALTER COLUMN version TYPE {wider}")
        if kind is None:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                f" version {column_type(widest)} PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
                " execution_ms double precision,"
                " forced boolean NOT NULL DEFAULT false); "
                f"COMMENT ON TABLE {self.table} IS 'Contract parts (NNN_name.contract.sql) "
                "applied, each once, after no replica of an older release was left'"
            )

    def record_statement(self, part: Migration, *, forced: bool) -> str:
        """The part's row, sent in the same message and transaction as its SQL. A plain
        INSERT: a part that somehow ran twice fails on the key and is rolled back."""
        return (
            f"INSERT INTO {self.table} "
            "(version, name, checksum, applied_at, execution_ms, forced) "
            f"VALUES ({int(part.version)}, {literal(part.name)}, {literal(part.checksum)}, "
            "clock_timestamp(), "
            "extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000, "
            f"{'true' if forced else 'false'})"
        )

    def remove_sql(self, version: int) -> str:
        """Delete a version's row, as one statement (sent with the part's undo file)."""
        return f"DELETE FROM {self.table} WHERE version = {int(version)}"

    async def remove(self, conn: asyncpg.Connection, version: int) -> None:
        await conn.execute(f"DELETE FROM {self.table} WHERE version = $1", version)

    async def set_checksum(self, conn: asyncpg.Connection, version: int, value: str) -> None:
        await conn.execute(
            f"UPDATE {self.table} SET checksum = $2 WHERE version = $1", version, value
        )


async def contract_undos(
    conn: asyncpg.Connection,
    versions: Sequence[int],
    migrations: dict[int, Migration],
    schema: str,
) -> dict[int, Migration]:
    """For a rollback of ``versions``: the undo file of each whose contract part has run.
    Refuses (before anything is undone) a version whose applied contract part has no
    ``NNN_name.contract.down.sql``."""
    ran = {row.version: row for row in await ContractLedger(schema).rows(conn)}
    undos: dict[int, Migration] = {}
    for version in versions:
        row = ran.get(version)
        if row is None:
            continue
        migration = migrations.get(version)
        undo = contract_undo(migration) if migration is not None else None
        if undo is None:
            raise ConfigurationError(
                f"migration {version:03d}'s contract part ({row.name}.sql) has run and there "
                f"is no {row.name}.down.sql to undo it, so it cannot be rolled back: write "
                "that file (it puts back what the contract part removed, such as the old "
                "column, filled from the new one), then roll back again; nothing was undone"
            )
        undos[version] = undo
    return undos


async def repair_contracts(
    conn: asyncpg.Connection, migrations: Sequence[Migration], schema: str
) -> list[int]:
    """``--repair`` for contract parts: accept an edited file's checksum, forget the row of
    one whose file is gone (never a row a newer release wrote); runs no SQL from them."""
    book = ContractLedger(schema)
    parts = [p for p in map(contract_part, migrations) if p is not None]
    files = {part.version: part.filename for part in parts}
    entries = plan_contracts(
        parts,
        (),
        await book.rows(conn),
        (),
        highest_local=max((m.version for m in migrations), default=0),
    )
    repaired = []
    for entry in entries:
        if entry.state is ContractState.CHANGED and entry.file_checksum is not None:
            await book.set_checksum(conn, entry.version, entry.file_checksum)
            log.info(
                "checksum_repaired",
                version=entry.version,
                name=entry.name,
                file=files.get(entry.version),
                old_checksum=entry.row.checksum if entry.row else None,
                new_checksum=entry.file_checksum,
            )
        elif entry.state is ContractState.MISSING:
            await book.remove(conn, entry.version)
            log.warning(
                "missing_row_removed",
                version=entry.version,
                name=entry.name,
                note="a contract part whose file is gone; what it removed stays removed",
            )
        else:
            continue
        repaired.append(entry.version)
    return repaired
