"""Migrated databases for tests: migrate a template once, clone it per test.

``CREATE DATABASE ... TEMPLATE`` copies a migrated database in milliseconds,
where migrating a fresh one takes a hundred or more. Used by the pytest plugin.

Several processes may share one server (pytest-xdist workers, two terminals):
the template is named after a hash of the migrations, so they all want the same
one. It is built under an exclusive advisory lock, under a temporary name that
is renamed only when complete, so a name that exists is a finished template.
Each process holds a shared advisory lock while it clones; the one that leaves
last (whose exclusive try succeeds) drops the template.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from natlangchain_migrate.api import migrate
from natlangchain_migrate.connection import connect
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.locks import lock_key
from natlangchain_migrate.repeatables import load_repeatables
from natlangchain_migrate.sqltext import quote_ident

TEMPLATE_PREFIX = "nlcm_template_"
CLONE_PREFIX = "nlcm_test_"


def template_name(migrations_dir: Path | None, schema: str) -> str:
    """The template's name: a hash of every migration's version and checksum (and every
    repeatable's name and checksum), and the schema, so an edited or added file makes a
    new template rather than reuse a stale one."""
    digest = hashlib.sha256(schema.encode())
    for migration in load_migrations(migrations_dir):
        digest.update(f"{migration.version}:{migration.checksum};".encode())
    for repeatable in load_repeatables(migrations_dir):  # an edited view is a new schema too
        digest.update(f"{repeatable.name}:{repeatable.checksum};".encode())
    return TEMPLATE_PREFIX + digest.hexdigest()[:16]


class TemplateDatabases:
    """One process's use of a migrated template on the server ``admin_url`` names.

    ``open`` finds or builds the template, ``clone`` and ``drop`` make and remove a
    test's database, ``close`` lets go (dropping the template if no one else uses it).
    One admin connection serves them all.
    """

    def __init__(
        self, admin_url: str, migrations_dir: Path | None = None, schema: str = "public"
    ) -> None:
        self.admin_url = admin_url
        self.migrations_dir = migrations_dir
        self.schema = schema
        self.name = template_name(migrations_dir, schema)
        self._build_key = lock_key(f"natlangchain_migrate:build:{self.name}")
        self._use_key = lock_key(f"natlangchain_migrate:use:{self.name}")
        self._conn: asyncpg.Connection | None = None

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("TemplateDatabases.open() was not awaited")
        return self._conn

    async def open(self) -> None:
        """Connect, announce our use (shared lock) and build the template if it is absent."""
        self._conn = await connect(self.admin_url)
        try:
            await self.conn.execute("SELECT pg_advisory_lock_shared($1)", self._use_key)
            await self.conn.execute("SELECT pg_advisory_lock($1)", self._build_key)
            try:
                if not await self._exists(self.name):
                    await self._build()
            finally:
                await self.conn.execute("SELECT pg_advisory_unlock($1)", self._build_key)
        except BaseException:
            await self.conn.close()  # the server frees both locks with the session
            raise

    async def clone(self) -> str:
        """A new database copied from the template; its URL."""
        name = f"{CLONE_PREFIX}{uuid.uuid4().hex[:12]}"
        await self.conn.execute(
            f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(self.name)}"
        )
        return with_database(self.admin_url, name)

    async def drop(self, url: str) -> None:
        """Drop a clone, ending any session the test left open on it."""
        name = urlsplit(url).path.lstrip("/")
        await self.conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    async def close(self) -> None:
        """Stop using the template; drop it when no other process still does."""
        try:
            await self.conn.execute("SELECT pg_advisory_unlock_shared($1)", self._use_key)
            if await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self._use_key):
                await self._drop_database(self.name)
        finally:
            await self.conn.close()

    async def _exists(self, name: str) -> bool:
        found = await self.conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        return found is not None

    async def _build(self) -> None:
        """Migrate a fresh database under a temporary name, close it to sessions (a
        template being cloned must have none), then give it its real name."""
        building = f"{self.name}_building"
        await self._drop_database(building)  # left by a process killed while building
        await self.conn.execute(f"CREATE DATABASE {quote_ident(building)} TEMPLATE template0")
        try:
            await migrate(
                with_database(self.admin_url, building),
                migrations_dir=self.migrations_dir,
                schema=self.schema,
            )
            await self.conn.execute(
                f"ALTER DATABASE {quote_ident(building)} WITH ALLOW_CONNECTIONS false"
            )
            await self.conn.execute(
                f"ALTER DATABASE {quote_ident(building)} RENAME TO {quote_ident(self.name)}"
            )
        except BaseException:
            await self._drop_database(building)
            raise

    async def _drop_database(self, name: str) -> None:
        await self.conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
