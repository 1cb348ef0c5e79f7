"""New tenants, fully migrated in one call: a schema (the migrations replayed into it, under
its own lock) or a database (a copy of a migrated template database, then a run that
applies whatever the template lacks).

Why two ways: PostgreSQL copies a database cheaply (``CREATE DATABASE ... TEMPLATE``, a
file copy) but has no schema copy; rebuilding a schema from a dump is a replay of other
SQL, with none of the ledger's guarantees. benchmarks/fleet.py measures both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.connection import connect, resolve_dsn
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.migrator import Migrator
from natlangchain_migrate.sqltext import quote_ident

if TYPE_CHECKING:
    from importlib.abc import Traversable

    from natlangchain_migrate.results import MigrationReport


async def create_tenant(
    dsn: str | None = None,
    *,
    schema: str,
    migrations_dir: Traversable | Path | str | None = None,
    lock_timeout: float = 300.0,
) -> MigrationReport:
    """Create ``schema`` (refused if it exists) and apply every migration into it, under
    the schema's own advisory lock; the run's report."""
    dsn = resolve_dsn(dsn)
    conn = await connect(dsn)
    try:
        if await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
            raise ConfigurationError(
                f"tenant schema {schema!r} already exists; migrate it with: "
                f"natlangchain-migrate --schema {schema}"
            )
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    finally:
        await conn.close()
    from natlangchain_migrate.settings import LockOptions

    migrator = Migrator(
        dsn, migrations_dir=migrations_dir, schema=schema, lock=LockOptions(wait=lock_timeout)
    )
    return await migrator.up()


async def create_tenant_database(
    dsn: str | None = None,
    *,
    database: str,
    template: str,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
) -> MigrationReport:
    """Create ``database`` as a copy of ``template`` (a database migrated by this tool,
    with no session open on it), then run the migrations into it: a no-op when the
    template is current, else it applies what the template lacks. ``dsn`` names any
    database of the server, with a role that may create databases."""
    dsn = resolve_dsn(dsn)
    conn = await connect(dsn)
    try:
        await conn.execute(
            f"CREATE DATABASE {quote_ident(database)} TEMPLATE {quote_ident(template)}"
        )
    finally:
        await conn.close()
    migrator = Migrator(with_database(dsn, database), migrations_dir=migrations_dir, schema=schema)
    return await migrator.up()
