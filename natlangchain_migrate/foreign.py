"""Other tools' ledgers: recognising them, and reading what each says was applied.

Each tool's table and what counts as applied in it, from the tool's own source:

- dbmate: ``schema_migrations (version varchar(128) PRIMARY KEY)``, one row per version;
- golang-migrate: ``schema_migrations (version bigint PRIMARY KEY, dirty boolean)``, one
  row holding the newest version: every file up to it is applied; dirty is refused;
- goose: ``goose_db_version (id, version_id, is_applied, tstamp)``, the newest row per
  version decides (version 0 is goose's own first row);
- Flyway: ``flyway_schema_history``, successful ``SQL``/``BASELINE`` rows not undone;
- sqlx: ``_sqlx_migrations (version, description, success, checksum, ...)``, successful;
- yoyo: ``_yoyo_migration (migration_hash, migration_id, applied_at_utc)``;
- node-pg-migrate: ``pgmigrations (id, name, run_on)``, name the file's stem;
- prisma: ``_prisma_migrations (id, checksum, finished_at, migration_name, logs,
  rolled_back_at, started_at, applied_steps_count)``, finished and not rolled back;
- alembic: ``alembic_version (version_num)``, one row per head of its revision graph: the
  head's file and every file below it are applied (adopt.py maps revisions to files);
- the seed's: ``schema_migrations (version integer, name, applied_at)``.

dbmate's and golang-migrate's table has our ledger's name; adopting one leaves it as it
is, and our ledger then lives in ``natlangchain_migrations`` beside it (ledger.py).
"""

from __future__ import annotations

import re
import shlex
from typing import NamedTuple

import asyncpg

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.sqltext import quote_ident

# Our ledger's name when another tool's table already has ours (schema_migrations).
BESIDE_FOREIGN = "natlangchain_migrations"
TOOLS = (
    "dbmate",
    "golang-migrate",
    "goose",
    "flyway",
    "sqlx",
    "yoyo",
    "node-pg-migrate",
    "prisma",
    "alembic",
    "seed",
)
_TABLES = {
    "goose": "goose_db_version",
    "flyway": "flyway_schema_history",
    "sqlx": "_sqlx_migrations",
    "yoyo": "_yoyo_migration",
    "node-pg-migrate": "pgmigrations",
    "prisma": "_prisma_migrations",
    "alembic": "alembic_version",
}
_LEADING_DIGITS = re.compile(r"^(\d+)")


class ForeignLedger(NamedTuple):
    """Another tool's ledger found in a schema ("": the target schema)."""

    tool: str
    table: str
    schema: str = ""


class ForeignApplied(NamedTuple):
    """What another tool recorded: the versions applied, or the newest (golang-migrate)."""

    versions: frozenset[int]
    up_to: int | None = None  # golang-migrate: every version up to this one
    names: tuple[str, ...] = ()  # rows whose version could not be read (reported)
    heads: tuple[str, ...] = ()  # alembic: the revisions its version table holds
    recorded: tuple[str, ...] = ()  # prisma: the folder names its rows hold


def schema_migrations_tool(columns: set[str]) -> str | None:
    """Which tool made a ``schema_migrations`` with these columns (None: ours or the seed's)."""
    if "name" in columns:
        return None
    return "golang-migrate" if "dirty" in columns else "dbmate"


class Absent(NamedTuple):
    """What one query finds where our ledger is not: another tool's ledger, whether the
    server is a standby, and whether the schema exists (the ledger's creation then needs
    no look of its own)."""

    foreign: ForeignLedger | None
    standby: bool
    has_schema: bool


# Other tools' tables (with their columns) in schema $1, else in the schemas of the
# session's search_path, and the server's facts: one row at least (NULLs when none).
_ABSENT_SQL = (
    "SELECT f.standby, f.has_schema, t.schema, t.relname, t.columns, t.place FROM "
    "(SELECT pg_is_in_recovery() AS standby, "
    "EXISTS (SELECT FROM pg_namespace WHERE nspname = $1) AS has_schema) f "
    "LEFT JOIN (SELECT n.nspname::text AS schema, c.relname::text AS relname, "
    "array_agg(a.attname::text) AS columns, "
    "array_position(current_schemas(false)::text[], n.nspname::text) AS place "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "WHERE (n.nspname = $1 OR n.nspname = ANY(current_schemas(false))) "
    "AND c.relname = ANY($2::text[]) GROUP BY n.nspname, c.relname) t ON true"
)


async def look_where_absent(conn: asyncpg.Connection, schema: str) -> Absent:
    """Where our ledger is missing, in one query: see Absent. Another tool's ledger is
    looked for in ``schema`` first, then in the search_path's schemas in the server's
    order: a tool run with ``?search_path=app`` (dbmate puts its table in the first
    schema of it) would otherwise see its history replayed into ``schema``."""
    rows = await conn.fetch(_ABSENT_SQL, schema, [*_TABLES.values(), "schema_migrations"])
    found: dict[str, dict[str, set[str]]] = {}
    tables = [row for row in rows if row["relname"] is not None]
    for row in sorted(tables, key=lambda row: (row["schema"] != schema, row["place"] or 0)):
        found.setdefault(row["schema"], {})[row["relname"]] = set(row["columns"])
    standby, has_schema = bool(rows[0]["standby"]), bool(rows[0]["has_schema"])
    for where, named in found.items():
        if (ledger := _first_ledger(named)) is not None:
            here = ledger if where == schema else ledger._replace(schema=where)
            return Absent(here, standby, has_schema)
    return Absent(None, standby, has_schema)


def _first_ledger(found: dict[str, set[str]]) -> ForeignLedger | None:
    """Which tool's ledger is among one schema's tables (table name to its columns)."""
    for name, table in _TABLES.items():
        if table in found:
            return ForeignLedger(name, table)
    columns = found.get("schema_migrations")
    maker = schema_migrations_tool(columns) if columns is not None else None
    return ForeignLedger(maker, "schema_migrations") if maker else None


def adopt_advice(found: ForeignLedger, schema: str, migrations_dir: str | None = None) -> str:
    """The sentence the runner says when it meets another tool's ledger unasked."""
    where = found.schema or schema
    flags = "" if where == "public" else f" --schema {shlex.quote(where)}"
    if migrations_dir is not None:
        flags += f" --migrations-dir {shlex.quote(migrations_dir)}"
    command = f"natlangchain-migrate adopt --from {found.tool}{flags}"
    if where != schema:
        return (
            f"there is no ledger in schema {schema}, but the connection's search_path holds "
            f"{found.tool}'s ledger {where}.{found.table}: to migrate {where}, adopt it once "
            f"with: {command} (it leaves {found.table} as it is), then run with --schema "
            f"{shlex.quote(where)}; to migrate {schema} beside it, connect without "
            f"{where} in search_path; nothing was run"
        )
    return (
        f"this database's history is in {found.tool}'s ledger {schema}.{found.table}; adopt "
        f"it once with: {command} (it leaves {found.table} as it is), then run again"
    )


async def read_applied(conn: asyncpg.Connection, tool: str, schema: str) -> ForeignApplied:
    """What ``tool``'s ledger in ``schema`` says was applied; a missing table is an error."""
    table = _TABLES.get(tool, "schema_migrations")
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    if await conn.fetchval("SELECT to_regclass($1)", qualified) is None:
        raise ConfigurationError(
            f"adopt --from {tool}: there is no {qualified} here; check --schema and the "
            "database, or name the tool that migrated it"
        )
    if table == "schema_migrations":
        await _check_shape(conn, tool, schema, qualified)
    if tool == "golang-migrate":
        row = await conn.fetchrow(f"SELECT version, dirty FROM {qualified} LIMIT 1")
        if row is not None and row["dirty"]:
            raise ConfigurationError(
                f"golang-migrate's ledger is dirty at version {row['version']} (a migration "
                "failed part-way); fix the schema and run migrate force VERSION first"
            )
        return ForeignApplied(frozenset(), up_to=int(row["version"]) if row else 0)
    if tool == "goose":
        query = (
            f"SELECT DISTINCT ON (version_id) version_id AS v, is_applied AS ok "
            f"FROM {qualified} ORDER BY version_id, id DESC"
        )
        pairs = [(int(r["v"]), bool(r["ok"])) for r in await conn.fetch(query)]
        return ForeignApplied(frozenset(v for v, ok in pairs if ok and v != 0))
    if tool == "flyway":
        query = (
            f"SELECT DISTINCT ON (version) version AS v, type, success FROM {qualified} "
            "WHERE version IS NOT NULL ORDER BY version, installed_rank DESC"
        )
        rows = await conn.fetch(query)
        applied = [r["v"] for r in rows if r["success"] and r["type"] != "UNDO_SQL"]
        return _from_names(applied)
    if tool == "alembic":
        rows = await conn.fetch(f"SELECT version_num FROM {qualified} ORDER BY 1")
        return ForeignApplied(frozenset(), heads=tuple(r["version_num"] for r in rows))
    if tool == "prisma":
        rows = await conn.fetch(
            f"SELECT migration_name FROM {qualified} "
            "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL"
        )
        names = [r["migration_name"] for r in rows]
        return _from_names(names)._replace(recorded=tuple(names))
    if tool == "sqlx":
        rows = await conn.fetch(f"SELECT version FROM {qualified} WHERE success")
        return ForeignApplied(frozenset(int(r["version"]) for r in rows))
    column = {"yoyo": "migration_id", "node-pg-migrate": "name"}.get(tool, "version")
    rows = await conn.fetch(f"SELECT {column}::text AS v FROM {qualified}")
    return _from_names([r["v"] for r in rows])


async def _check_shape(conn: asyncpg.Connection, tool: str, schema: str, qualified: str) -> None:
    """dbmate, golang-migrate, the seed and this runner all call their table
    schema_migrations: refuse to read one tool's as another's (ours as dbmate's would
    adopt nothing and say it did)."""
    columns = await conn.fetchval(
        "SELECT array_agg(attname::text) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        qualified,
    )
    maker = schema_migrations_tool(set(columns or ()))
    if maker == (None if tool == "seed" else tool):
        return
    if maker is not None:
        where = "" if schema == "public" else f" --schema {shlex.quote(schema)}"
        raise ConfigurationError(
            f"adopt --from {tool}: {qualified} is {maker}'s ledger, not {tool}'s; adopt it "
            f"with: natlangchain-migrate adopt --from {maker}{where}; nothing was written"
        )
    raise ConfigurationError(
        f"adopt --from {tool}: {qualified} is this runner's own ledger (or the seed's), not "
        f"{tool}'s, so it says nothing of what {tool} applied. adopt reads {tool}'s table "
        "under its default name: if the tool kept it under another (dbmate's "
        "--migrations-table, golang-migrate's x-migrations-table) and this ledger is empty, "
        "drop this one and rename that table to schema_migrations, then adopt again; "
        "nothing was written"
    )


def _from_names(names: list[str]) -> ForeignApplied:
    """Versions from recorded names or versions (``0001_initial``, ``1700000000000_x``, ``3``)."""
    versions, unread = set(), []
    for name in names:
        found = _LEADING_DIGITS.match(name)
        if found is None:
            unread.append(name)
        else:
            versions.add(int(found[1]))
    return ForeignApplied(frozenset(versions), names=tuple(unread))
