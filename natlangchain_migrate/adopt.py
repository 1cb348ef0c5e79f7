"""``adopt --from TOOL``: take over another tool's history without running anything.

It reads what that tool recorded as applied (foreign.py; alembic's head revision is found
in the files' names, alembic_export.py), checks it against the files
(a version recorded there without a file here is reported, never guessed), and writes
our ledger, with each file's checksum and applied_by ``adopt:TOOL``, under the migration
lock in one transaction. The other tool's table is left as it is, so a team can go back.
dbmate's and golang-migrate's table is named schema_migrations like ours: our ledger is
then ``natlangchain_migrations`` beside it, where every run looks (ledger.py).
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.events import log
from natlangchain_migrate.foreign import BESIDE_FOREIGN, TOOLS, read_applied
from natlangchain_migrate.ledger import LEDGER_TABLE, Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.prisma_folders import shared_in_ledger
from natlangchain_migrate.settings import RunnerOptions


class AdoptReport(NamedTuple):
    """What adopt recorded (or, dry, would record), where, and what stays pending."""

    tool: str
    table: str
    adopted: list[int]
    pending: list[int]
    dry_run: bool


async def adopt(options: RunnerOptions, tool: str, *, dry_run: bool = False) -> AdoptReport:
    """Write our ledger from ``tool``'s; refuses unknown versions and an existing ledger."""
    if tool not in TOOLS:
        raise ConfigurationError(f"adopt --from {tool!r}: the tools are {', '.join(TOOLS)}")
    migrations = load_migrations(options.migrations_dir)
    files = {migration.version: migration for migration in migrations}
    table = BESIDE_FOREIGN if tool in ("dbmate", "golang-migrate") else LEDGER_TABLE
    ledger = Ledger(options.schema, table)
    async with locked_connection(options, dry_run=dry_run) as connection:
        conn = connection.conn
        applied = await read_applied(conn, tool, options.schema)
        recorded = set(applied.versions)
        if tool == "alembic":  # a revision, named in the files (alembic_export.py)
            recorded = alembic_recorded(applied.heads, migrations)
        elif applied.up_to is not None:  # golang-migrate: the newest version only
            recorded = {v for v in files if v <= applied.up_to}
            if applied.up_to and applied.up_to not in files:
                recorded.add(applied.up_to)
        if tool == "prisma":  # two rows of one timestamp: a folder renamed, not its row
            names = {version: migration.name for version, migration in files.items()}
            shared = shared_in_ledger(list(applied.recorded), names)
            if shared is not None:
                raise shared
        unknown = sorted(recorded - set(files))
        if unknown or applied.names:
            named = ", ".join([*map(str, unknown), *applied.names])
            raise ConfigurationError(
                f"{tool} recorded {named} as applied, and no file here has that version; "
                "restore the file(s) to the migrations folder (or point --migrations-dir at "
                "the folder that tool used), then adopt again; nothing was written"
            )
        await _refuse_existing(conn, ledger, tool)
        chosen = [files[version] for version in sorted(recorded)]
        if not dry_run:
            async with conn.transaction():
                await ledger.ensure(conn, widest=max(files, default=0))
                if tool == "seed":  # the seed's rows stay; their checksums are filled in
                    for migration in chosen:
                        await ledger.set_checksum(conn, migration.version, migration.checksum)
                else:
                    await ledger.record_baseline(conn, chosen, by=f"adopt:{tool}")
    adopted = [migration.version for migration in chosen]
    pending = [version for version in sorted(files) if version not in recorded]
    log.info("adopted", tool=tool, table=ledger.table, versions=adopted, dry_run=dry_run)
    return AdoptReport(tool, ledger.table, adopted, pending, dry_run)


def alembic_recorded(heads: tuple[str, ...], migrations: list[Migration]) -> set[int]:
    """The versions alembic's head covers: the file named ``VERSION_<head>_name`` and every
    file below it. Several heads (a branched graph) and a head with no file are refused."""
    if len(heads) > 1:
        raise ConfigurationError(
            f"alembic_version holds {len(heads)} heads ({', '.join(heads)}): a branched "
            "revision graph has no single order; merge them (alembic merge heads, then "
            "alembic upgrade head), export again and adopt; nothing was written"
        )
    if not heads:
        return set()
    (head,) = heads
    carrying = [m for m in migrations if revision_of(m.name) == head]
    if not carrying:
        raise ConfigurationError(
            f"alembic's head revision {head} has no file here named VERSION_{head}_name.sql; "
            "export the revisions (natlangchain-migrate adopt --from alembic --export-from "
            "alembic.ini), then adopt again; nothing was written"
        )
    return {m.version for m in migrations if m.version <= carrying[0].version}


def revision_of(name: str) -> str | None:
    """The alembic revision a file's name carries: ``003_ae1027a6acf_add_users`` ->
    ``ae1027a6acf`` (None for a name without one)."""
    parts = name.split("_", 2)
    return parts[1] if len(parts) > 1 and parts[1] else None


async def _refuse_existing(conn: asyncpg.Connection, ledger: Ledger, tool: str) -> None:
    """Adopting twice, or over a ledger this runner already wrote, would mix two histories."""
    if tool == "seed":
        return
    exists = await conn.fetchval("SELECT to_regclass($1)", ledger.table)
    if exists is not None and await conn.fetchval(f"SELECT count(*) FROM {ledger.table}"):
        raise ConfigurationError(
            f"adopt --from {tool}: our ledger {ledger.table} already holds rows; adopt is for "
            "a database this runner has not migrated (see --status)"
        )
