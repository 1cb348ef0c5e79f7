"""Writing a baseline file from the history: replay the versions up to N on a scratch
database (as ``verify`` does, created and always dropped) and describe its schema.

The description (``schema_dump``) lists objects in the order an empty database can
create them in, so the file applies as it is; ``verify`` then checks that it gives the
same schema as the replay. Repeatables (R__) are left out: they run after the baseline
on a new database, as after a replay. Data rows that migrations inserted are not in it.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from natlangchain_migrate import runner
from natlangchain_migrate.baseline_files import load_baselines, schema_line
from natlangchain_migrate.connection import connect
from natlangchain_migrate.discovery import BASELINE_SUFFIX, load_migrations, shipped_migrations_dir
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.events import log
from natlangchain_migrate.schema_dump import describe_schema, write_schema
from natlangchain_migrate.settings import CallArguments, RunnerOptions

if TYPE_CHECKING:
    from natlangchain_migrate.discovery import Migration

_LABEL = re.compile(r"^[A-Za-z0-9_]+$")
_PINNED_EXTENSION = re.compile(r"^(CREATE EXTENSION IF NOT EXISTS .*?) VERSION '[^']*';$", re.M)


class WrittenBaseline(NamedTuple):
    """The baseline file written, and the versions it covers."""

    path: Path
    version: int
    covers: list[int]


async def write_baseline_file(
    options: RunnerOptions, *, server_dsn: str, up_to: int | None = None, label: str = "schema"
) -> WrittenBaseline:
    """Write ``NNN_<label>.baseline.sql`` into the migrations folder: the schema after
    every version up to ``up_to`` (default: the newest file), replayed on a scratch
    database on the server of ``server_dsn``."""
    folder = _folder(options)
    if not _LABEL.match(label):
        raise ConfigurationError(
            f"--name {label!r}: use letters, digits and underscores (the file is "
            f"NNN_{label}.baseline.sql)"
        )
    migrations = load_migrations(folder)
    if not migrations:
        raise ConfigurationError(
            f"{folder} has no versioned migration files to write a baseline from"
        )
    top = _chosen(migrations, up_to)
    baselines = load_baselines(folder)
    prefix = top.filename.split("_", 1)[0]
    target = folder / f"{prefix}_{label}{BASELINE_SUFFIX}"
    for other in baselines:
        if other.version == top.version and other.filename != target.name:
            raise ConfigurationError(
                f"{other.filename} is already the baseline file of version {top.version}; "
                f"remove it first, or give --name {other.name.split('_', 1)[1].split('.')[0]}"
            )
    covered = [m for m in migrations if m.version <= top.version]
    text = await _replayed_schema(options, server_dsn, folder, top.version)
    # The server's default version of each extension, as the files' own CREATE EXTENSION
    # gets it: a laptop with an older pgvector than the server it was written on applies it.
    text = _PINNED_EXTENSION.sub(r"\1;", text)
    write_schema(target, _header(covered, top) + schema_line(options.schema) + text)
    log.info(
        "baseline_file_written",
        file=target.name,
        version=top.version,
        covers=len(covered),
    )
    from natlangchain_migrate.manifest import MANIFEST_NAME, write_manifest

    if (folder / MANIFEST_NAME).exists():  # the manifest vouches for every .sql file
        write_manifest(folder)
    return WrittenBaseline(target, top.version, [m.version for m in covered])


def _folder(options: RunnerOptions) -> Path:
    directory = options.migrations_dir
    if directory is None or not isinstance(directory, Path | str):
        shipped = shipped_migrations_dir()
        raise ConfigurationError(
            f"baseline-file writes into the migrations folder; give --migrations-dir (the "
            f"shipped migrations in {shipped} are part of the installed package)"
        )
    return Path(directory)


def _chosen(migrations: list[Migration], up_to: int | None) -> Migration:
    if up_to is None:
        return migrations[-1]
    for migration in migrations:
        if migration.version == up_to:
            return migration
    known = f"{migrations[0].version} to {migrations[-1].version}"
    raise ConfigurationError(
        f"--up-to {up_to}: no migration file has that version ({known} here); give the "
        "version of the newest file the baseline should cover"
    )


def _header(covered: list[Migration], top: Migration) -> str:
    first = covered[0].filename
    return (
        f"-- natlangchain-migrate baseline file: the schema after {len(covered)} migrations,\n"
        f"-- {first} .. {top.filename}, written by natlangchain-migrate\n"
        "-- baseline-file. A new database applies it instead of them; a database that has\n"
        "-- any of them ignores it. Check it against the replay with: natlangchain-migrate verify\n"
    )


async def _replayed_schema(
    options: RunnerOptions, server_dsn: str, folder: Path, version: int
) -> str:
    """The schema after replaying the versions up to ``version`` on a scratch database."""
    from natlangchain_migrate.verify import (
        install_prerequisites,
        scratch_database,
        versioned_copy,
    )

    with tempfile.TemporaryDirectory(prefix="nlcm-baseline-") as copy:
        # Older baseline files stay (a squashed history starts from one); one at or above
        # this version would stand in for the replay it is to be written from.
        versioned = versioned_copy(folder, Path(copy), baselines_below=version)
        async with scratch_database(
            server_dsn, wait=options.connect_wait, command="baseline-file"
        ) as (_, dsn):
            conn = await connect(dsn)
            try:
                await install_prerequisites(conn, load_migrations(versioned), options.schema)
                scratch = options._replace(dsn=dsn, pool=None, migrations_dir=versioned)
                await runner.up(scratch, CallArguments(target_version=version))
                return await describe_schema(conn, ledger_schema=options.schema)
            finally:
                await conn.close()
