"""``verify``: every down file really undoes its migration, checked on a scratch database.

On a database made for the purpose (``nlc_verify_<random>``, created on the given
server and always dropped, also on failure and on SIGTERM/SIGINT): apply the
migrations one at a time with the real runner, describing the schema after each
(``schema_dump``); then, newest first, undo each with the real rollback and compare
with the schema from before it, apply it again and compare with the schema after
it, and undo it again. The first difference ends the run with a unified diff.

Extensions that migrations declare with ``-- natlangchain: requires-extension`` are
prerequisites, created in the scratch database before anything runs (as a DBA
would): a down file that keeps such an extension, as 002's keeps pgvector on
purpose, is not faulted for it.
"""

from __future__ import annotations

import difflib
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import anyio
import asyncpg

from natlangchain_migrate import libpq, preflight, runner, undo
from natlangchain_migrate.connection import connect
from natlangchain_migrate.discovery import (
    Migration,
    is_baseline_file,
    is_repeatable_file,
    load_migrations,
    shipped_migrations_dir,
)
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import PrivilegeError, SchemaNotRestoredError
from natlangchain_migrate.events import log
from natlangchain_migrate.layouts import SETTINGS_FILE
from natlangchain_migrate.schema_dump import describe_schema
from natlangchain_migrate.settings import CallArguments, RunnerOptions
from natlangchain_migrate.sqltext import quote_ident

if TYPE_CHECKING:
    from importlib.abc import Traversable

SCRATCH_PREFIX = "nlc_verify_"
# Dropping the scratch database is bounded even when the run was interrupted.
DROP_BOUND_S = 30.0
# Differing lines quoted in the one-line error; the whole diff is in the exception.
QUOTED_LINES = 3


class VerifiedMigration(NamedTuple):
    """A migration whose down file restored the schema, and whose re-apply matched."""

    version: int
    name: str


class VerifyReport(NamedTuple):
    """What ``verify`` checked, newest first, and where; ``baseline``: the baseline file
    found to give the replay's schema (None without one, or with its history squashed)."""

    scratch_database: str
    verified: list[VerifiedMigration]
    duration_ms: float
    baseline: str | None = None


async def verify(options: RunnerOptions, *, server_dsn: str) -> VerifyReport:
    """Check every down file in ``options.migrations_dir`` on a scratch database on the
    server of ``server_dsn`` (a database there that the role may connect to).

    Raises SchemaNotRestoredError at the first difference (or missing down file), and
    the runner's own errors when a migration or down file fails to run.
    """
    started = time.monotonic()
    migrations = load_migrations(options.migrations_dir)
    preflight.check_options(migrations, options)
    from natlangchain_migrate import verify_baseline

    # A squashed history (no file at or below the baseline's version): the check starts from
    # the baseline file, and covers the versions above it.
    start_at = verify_baseline.squashed_at(options.migrations_dir, migrations)
    if start_at is not None:
        migrations = [m for m in migrations if m.version > start_at]
    _refuse_missing_down_files(migrations)
    with tempfile.TemporaryDirectory(prefix="nlcm-verify-") as copy:
        # Repeatables (R__) have no down files and belong to no version: the scratch runs
        # use a copy of the versioned files alone, so that none runs between the steps.
        versioned = versioned_copy(
            options.migrations_dir, Path(copy), baselines_below=None if start_at is not None else 0
        )
        async with scratch_database(server_dsn, wait=options.connect_wait) as (
            name,
            scratch_dsn,
        ):
            log.info("verify_started", scratch_database=name, migrations=len(migrations))
            on_scratch = options._replace(dsn=scratch_dsn, pool=None, migrations_dir=versioned)
            checked = [
                m for m in load_migrations(versioned) if start_at is None or m.version > start_at
            ]
            verified = await _verify_on(on_scratch, scratch_dsn, checked, start_at=start_at)
    baseline = None
    if start_at is None:
        baseline = await verify_baseline.check(options, server_dsn=server_dsn)
    report = VerifyReport(name, verified, ms_since(started), baseline)
    log.info("verify_done", verified=len(verified), duration_ms=report.duration_ms)
    return report


def versioned_copy(
    directory: Traversable | Path | str | None, into: Path, *, baselines_below: int | None = 0
) -> Path:
    """``into``, holding a byte-for-byte copy of every versioned ``.sql`` file (up and
    down) of ``directory``, with the folder's settings (layout, mixed versions) and
    Flyway's per-file ``.sql.conf``: no repeatable, no manifest. Baseline files only
    below version ``baselines_below`` (0: none; None: all of them)."""
    folder = shipped_migrations_dir() if directory is None else directory
    source = Path(folder) if isinstance(folder, str) else folder
    for entry in source.iterdir():
        if is_baseline_file(entry.name) and baselines_below is not None:
            prefix = entry.name.split("_", 1)[0]
            if not (prefix.isdigit() and int(prefix) < baselines_below):
                continue
        versioned = entry.name.endswith(".sql") and not is_repeatable_file(entry.name)
        settings = entry.name == SETTINGS_FILE or entry.name.endswith(".sql.conf")
        if (versioned or settings) and entry.is_file():
            (into / entry.name).write_bytes(entry.read_bytes())
        elif entry.name[:1].isdigit() and "." not in entry.name and entry.is_dir():
            _copy_nested(entry, into / entry.name)
    return into


def _copy_nested(folder: Traversable, into: Path) -> None:
    """prisma's ``<version>_<name>/migration.sql`` (and ``down.sql``), as layouts.py reads
    them."""
    for child in ("migration.sql", "down.sql"):
        if (folder / child).is_file():
            into.mkdir(exist_ok=True)
            (into / child).write_bytes((folder / child).read_bytes())


def _refuse_missing_down_files(migrations: Sequence[Migration]) -> None:
    """Newest first, as the check itself goes: the first one without a down file stops it."""
    for migration in reversed(migrations):
        if migration.down_file is None:
            down = down_name(migration)
            raise SchemaNotRestoredError(
                f"cannot verify {migration.name}: it has no down file; {_write(migration)} "
                "that undoes it (verify checks every migration)",
                version=migration.version,
                name=migration.name,
                step="down",
                file=down,
            )


# The layouts whose file holds its down SQL in a section, and the section's marker.
_DOWN_SECTIONS = {
    "goose": "-- +goose Down",
    "dbmate": "-- migrate:down",
    "node-pg-migrate": "-- Down Migration",
}


def down_name(migration: Migration) -> str:
    """A migration's down file as its layout names it: ``NNN_name.down.sql`` (ours,
    golang-migrate, sqlx), prisma's ``<folder>/down.sql``, Flyway's ``U<n>__desc.sql``,
    the down section of a goose, dbmate or node-pg-migrate file."""
    if migration.layout in _DOWN_SECTIONS:
        return f"the down section of {migration.filename}"
    if migration.down_file is not None:
        return str(migration.down_file.name)
    if migration.layout == "prisma":
        return f"{migration.name}/down.sql"
    if migration.layout == "flyway" and migration.name.startswith("V"):
        return f"U{migration.name[1:]}.sql"
    return f"{migration.name}.down.sql"


def _write(migration: Migration) -> str:
    """What to write, in the layout's terms."""
    marker = _DOWN_SECTIONS.get(migration.layout or "")
    if marker is not None:
        return f"add a '{marker}' section to {migration.filename}"
    if migration.layout == "prisma":
        return (
            f"write {migration.name}/down.sql beside its migration.sql (prisma itself applies "
            "no down file: its docs generate one with prisma migrate diff ... --script, and "
            "this runner's --rollback runs it)"
        )
    return f"write {down_name(migration)}"


class _Scratch:
    """The scratch database: our runner and rollback on it, and a connection that
    describes its schema."""

    def __init__(self, options: RunnerOptions, conn: asyncpg.Connection) -> None:
        self.options = options
        self.conn = conn

    async def describe(self) -> str:
        return await describe_schema(self.conn, ledger_schema=self.options.schema)

    async def apply_up_to(self, version: int) -> None:
        await runner.up(self.options, CallArguments(target_version=version))

    async def undo_newest(self) -> None:
        await undo.rollback(self.options, steps=1)


async def _verify_on(
    options: RunnerOptions,
    scratch_dsn: str,
    migrations: Sequence[Migration],
    *,
    start_at: int | None = None,
) -> list[VerifiedMigration]:
    """Apply one by one, describing each state; then newest first: down, up again, down
    again, each compared with the state it must give. ``start_at``: the version of the
    baseline file applied first (a squashed history)."""
    conn = await connect(scratch_dsn)
    try:
        await install_prerequisites(conn, migrations, options.schema)
        scratch = _Scratch(options, conn)
        if start_at is not None:
            await scratch.apply_up_to(start_at)
        schemas = [await scratch.describe()]
        for migration in migrations:
            await scratch.apply_up_to(migration.version)
            schemas.append(await scratch.describe())
        verified: list[VerifiedMigration] = []
        for index, migration in reversed(list(enumerate(migrations))):
            before, after = schemas[index], schemas[index + 1]
            steps = (
                ("down", scratch.undo_newest, before),
                ("up again", partial(scratch.apply_up_to, migration.version), after),
                ("down again", scratch.undo_newest, before),
            )
            for step, action, expected in steps:
                await action()
                actual = await scratch.describe()
                if actual != expected:
                    checked = [item.version for item in verified]
                    raise _mismatch(migration, step, expected, actual, checked)
            verified.append(VerifiedMigration(migration.version, migration.name))
            log.info(
                "verify_migration_ok",
                version=migration.version,
                name=migration.name,
                file=migration.filename,
            )
        return verified
    finally:
        await conn.close()


async def install_prerequisites(
    conn: asyncpg.Connection, migrations: Sequence[Migration], schema: str
) -> None:
    """The target schema and the declared extensions, as they would be before any run.

    An extension the server lacks is left to the runner, whose preflight says what to
    install; one the role may not create is named here.
    """
    if schema != "public":
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    wanted = sorted({r.name for m in migrations for r in m.directives.requires_extensions})
    available = {
        row["name"]
        for row in await conn.fetch(
            "SELECT name FROM pg_available_extensions WHERE name = ANY($1::text[])", wanted
        )
    }
    for name in wanted:
        if name not in available:
            continue
        try:
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {quote_ident(name)}")
        except asyncpg.InsufficientPrivilegeError as error:
            role = await conn.fetchval("SELECT current_user")
            raise PrivilegeError(
                f"role {role} may not create the extension {name} in the scratch database, "
                f"which verify installs first because a migration requires it: {error}. Run "
                "verify as a role that may (a superuser), or on the embedded server (unset "
                "DATABASE_URL)"
            ) from error


def _mismatch(
    migration: Migration, step: str, expected: str, actual: str, verified: list[int]
) -> SchemaNotRestoredError:
    down = down_name(migration)
    if step == "up again":
        file = migration.filename
        what = (
            f"{file} applied again after {down} gives another schema than its first apply "
            f"(the down file leaves something behind that {file} then keeps or changes)"
        )
        labels = (f"after {migration.filename}", f"after {down} and {file} again")
    else:
        file = down
        again = " the second time" if step == "down again" else ""
        what = f"{down}{again} does not restore the schema from before {migration.name}"
        labels = (f"before {migration.name}", f"after {down}")
    diff = list(
        difflib.unified_diff(expected.splitlines(), actual.splitlines(), *labels, lineterm="", n=1)
    )
    changed = [line for line in diff[2:] if line[:1] in "+-" and line[1:].strip()]
    quoted = "; ".join(line[:1] + " " + line[1:].strip() for line in changed[:QUOTED_LINES])
    more = len(changed) - QUOTED_LINES
    tail = f" (and {more} more differing lines: see the diff or --json)" if more > 0 else ""
    return SchemaNotRestoredError(
        f"{what}: {quoted}{tail}",
        version=migration.version,
        name=migration.name,
        step=step,
        file=file,
        diff="\n".join(diff) + "\n",
        verified=verified,
        summary=what,
    )


@asynccontextmanager
async def scratch_database(
    server_dsn: str, *, wait: float = 0.0, command: str = "verify"
) -> AsyncIterator[tuple[str, str]]:
    """Create ``nlc_verify_<random>`` on the server, yield its name and URL, drop it.

    The drop runs whatever ends the block (an error, a cancellation by SIGTERM or
    SIGINT), shielded and bounded; ``WITH (FORCE)`` ends sessions left in it.
    """
    name = SCRATCH_PREFIX + secrets.token_hex(6)
    admin = await connect(server_dsn, wait=wait)
    created = False
    try:
        await _create(admin, name, command)
        created = True
        scratch_dsn = with_database(server_dsn, name)
        # Its ``connecting`` events name where the server's URL came from (DATABASE_URL...).
        libpq.remember_source(scratch_dsn, libpq.source_of(server_dsn))
        yield name, scratch_dsn
    finally:
        libpq.forget_source(with_database(server_dsn, name))
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + DROP_BOUND_S):
            if created:
                await _drop(admin, name)
            await admin.close()
        if not admin.is_closed():
            admin.terminate()


async def _create(admin: asyncpg.Connection, name: str, command: str) -> None:
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    except asyncpg.InsufficientPrivilegeError as error:
        role = await admin.fetchval("SELECT quote_ident(current_user)")
        raise PrivilegeError(
            f"role {role} may not create the scratch database {command} works in ({error}): "
            f"let it with ALTER ROLE {role} CREATEDB; or run {command} on another server, such "
            "as the embedded one (unset DATABASE_URL)"
        ) from error


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    except (asyncpg.PostgresError, OSError) as error:
        log.warning(
            "verify_scratch_left",
            scratch_database=name,
            error=str(error),
            fix=f'DROP DATABASE "{name}" WITH (FORCE);',
        )
    else:
        log.info("verify_scratch_dropped", scratch_database=name)
