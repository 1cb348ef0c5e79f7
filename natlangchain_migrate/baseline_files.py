"""Baseline files: ``NNN_name.baseline.sql``, the schema after versions up to NNN, that a
new database applies instead of replaying them (Flyway's ``B`` migrations).

A database is new when the ledger holds no versioned row (absent or empty). Such a
database, on a run that wants every version up to NNN (no ``--target`` below it, no
``--skip`` at or below it), applies the newest baseline file in one transaction with
a ledger row for each covered version whose file is here (that file's checksum, so
status, drift, rollback and the manifest work as after a replay) and one for NNN
itself when its file is not; ``applied_by`` says ``baseline-file:NNN``. A database with
any versioned row never runs a baseline file. Rows at or below the newest baseline
whose files are gone (a squashed history) are applied, not drift; rolling one of them
back is refused (its down file is gone with it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.discovery import is_baseline_file
from natlangchain_migrate.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Traversable

    from natlangchain_migrate.discovery import Migration
    from natlangchain_migrate.plan import MigrationPlan
    from natlangchain_migrate.settings import CallArguments

_BASELINE_FILE = re.compile(r"^(?P<version>\d+)_(?P<label>[A-Za-z0-9_]+)\.baseline\.sql$")
# The header line baseline-file writes: the schema its objects are named in.
_WRITTEN_FOR = re.compile(r"^-- schema: (?P<schema>\S+) \(", re.M)
# The header line baseline-file writes: the first and the last file it was written from.
_WRITTEN_FROM = re.compile(r"^-- (?P<first>\S+) \.\. (?P<last>\S+), written by", re.M)
# What a baseline file writes in the ledger's applied_by, before its version.
APPLIED_BY_PREFIX = "baseline-file:"


def load_baselines(directory: Traversable | Path | str | None) -> list[Migration]:
    """The folder's baseline files, oldest first, each as a Migration (version NNN, name
    ``NNN_name.baseline``); two with one version, or a misnamed one, are refused."""
    from natlangchain_migrate.discovery import read_migration_file, shipped_migrations_dir
    from natlangchain_migrate.versions import parse_version

    folder = shipped_migrations_dir() if directory is None else directory
    folder = Path(folder) if isinstance(folder, str) else folder
    try:
        entries = [e for e in folder.iterdir() if is_baseline_file(e.name) and e.is_file()]
    except OSError:
        return []  # load_migrations names what is wrong with the folder
    found: dict[int, Migration] = {}
    for entry in sorted(entries, key=lambda e: e.name):
        match = _BASELINE_FILE.match(entry.name)
        if match is None:
            raise ConfigurationError(
                f"{entry.name}: baseline files are named NNN_name.baseline.sql (NNN the "
                "newest version it covers, lowercase .sql); rename it"
            )
        version = parse_version(entry.name, match["version"])
        if version in found:
            raise ConfigurationError(
                f"{found[version].filename} and {entry.name} are both baseline files of "
                f"version {version}; keep one"
            )
        # Big or with COPY data (pg_dump's reference data), it is streamed as any file.
        baseline = read_migration_file(version, entry)
        if baseline.directives.no_transaction:
            raise ConfigurationError(
                f"{entry.name}: a baseline file always runs in one transaction (all of it "
                "or nothing); remove its no-transaction line"
            )
        found[version] = baseline
    return [found[version] for version in sorted(found)]


def newest_baseline(baselines: Sequence[Migration]) -> Migration | None:
    return baselines[-1] if baselines else None


def baseline_applies(
    baseline: Migration | None, *, ledger_empty: bool, call: CallArguments
) -> bool:
    """Whether a run uses the baseline file: a new database (no versioned row), and a
    run that wants every version it covers."""
    if baseline is None or not ledger_empty:
        return False
    if call.target_version is not None and call.target_version < baseline.version:
        return False
    return not any(version <= baseline.version for version in call.skip)


def with_baseline(
    plan: MigrationPlan, baseline: Migration, migrations: Sequence[Migration]
) -> MigrationPlan:
    """The plan with the baseline file in place of the pending versions it covers."""
    covered = tuple(m for m in migrations if 0 <= m.version <= baseline.version)
    stand_in = baseline._replace(baseline_covers=covered)
    above = [m for m in plan.pending if not 0 <= m.version <= baseline.version]
    return plan._replace(pending=[stand_in, *above], resume_from={})


def sent_in_one_message(migration: Migration) -> bool:
    """A baseline file that is sent whole in one message (not streamed in pieces): a new
    database creates its ledger in that file's transaction (apply.py)."""
    return (
        migration.baseline_covers is not None
        and migration.source is None
        and not migration.directives.no_transaction
        and not migration.directives.backfill
    )


def applied_by(baseline: Migration) -> str:
    """What the ledger rows a baseline file wrote say in applied_by."""
    prefix = baseline.filename.split("_", 1)[0]
    return f"{APPLIED_BY_PREFIX}{prefix}"


def ledger_rows(baseline: Migration) -> list[Migration]:
    """The rows a baseline file writes: each covered file's, and its own version's when no
    file of that version is here (the row that tells the next run it is not new)."""
    covered = list(baseline.baseline_covers or ())
    if all(m.version != baseline.version for m in covered):
        covered.append(baseline)
    return covered


def refuse_rollback_below(
    versions: Sequence[tuple[int, str]], files: set[int], baselines: Sequence[Migration]
) -> None:
    """Refuse to roll back a version a baseline covers whose file is gone: its down file
    is gone too, and forgetting its row would leave its objects unaccounted for."""
    newest = newest_baseline(baselines)
    if newest is None:
        return
    gone = [(v, name) for v, name in versions if v <= newest.version and v not in files]
    if gone:
        version, name = gone[0]
        if name.endswith(".baseline"):  # the row a baseline file wrote for its own version
            raise ConfigurationError(
                f"cannot roll back {version:03d} ({name}): this database was built from the "
                f"baseline file {name}.sql, which has no down file; nothing was "
                f"changed. Keep the database at {version:03d} or above (rollback --to "
                f"{version}), or drop it and build it again"
            )
        raise ConfigurationError(
            f"cannot roll back {version:03d} ({name}): the baseline file {newest.filename} "
            "covers it and its files are gone here (a squashed history); nothing was "
            f"changed. Restore {name}.sql and its down file to undo it, or keep the database "
            f"at {newest.version:03d} or above (rollback --to {newest.version})"
        )


def replays_instead(baseline: Migration, schema: str, migrations: Sequence[Migration]) -> bool:
    """Whether a new database in ``schema`` replays the files instead of applying a
    baseline written for another schema: yes when the files it was written from are all
    here (a fleet of tenant schemas then works from one folder); else the baseline stays
    in the plan and preflight refuses it by name (``refuse_other_schema``)."""
    head = _head(baseline)
    found = _WRITTEN_FOR.search(head)
    if found is None or found["schema"] == schema:
        return False
    written_from = _WRITTEN_FROM.search(head)
    names = {m.filename for m in migrations}
    return written_from is not None and {written_from["first"], written_from["last"]} <= names


def refuse_uncovered_files(baseline: Migration, migrations: Sequence[Migration]) -> None:
    """Refuse a file numbered at or below a written baseline's version but above the
    last file it was written from: a new database would record it as applied without
    running it."""
    written_from = _WRITTEN_FROM.search(_head(baseline))
    digits = re.search(r"\d+", written_from["last"]) if written_from else None
    if digits is None:  # written by hand: it says nothing of the files it stands for
        return
    last = int(digits.group())
    for migration in migrations:
        if last < migration.version <= baseline.version:
            raise ConfigurationError(
                f"{migration.filename} is numbered at or below the baseline file "
                f"{baseline.filename}, which was written from the files up to "
                f"{written_from['last'] if written_from else last}, so it does not hold "
                f"{migration.filename}'s changes; nothing was applied. Write the baseline "
                f"again (natlangchain-migrate baseline-file) or renumber "
                f"{migration.filename} above {baseline.version}"
            )


def schema_line(schema: str) -> str:
    """The header line that says which schema a written baseline file's objects are in."""
    return (
        f"-- schema: {schema} (its objects are named in it; a run into another schema "
        "refuses this file)\n"
    )


def _head(migration: Migration) -> str:
    """Where a written baseline file's header is: its first 4 KiB (a streamed one's read)."""
    if migration.source is None:
        return migration.sql[:4096]
    with migration.source.open("rb") as file:
        return file.read(4096).decode("utf-8-sig", errors="replace")


def refuse_other_schema(pending: Sequence[Migration], schema: str) -> None:
    """Refuse to apply a written baseline file into another schema than the one it names
    its objects in: they would land in that one, not in the run's."""
    for migration in pending:
        if migration.baseline_covers is None:
            continue
        found = _WRITTEN_FOR.search(_head(migration))
        if found is not None and found["schema"] != schema:
            raise ConfigurationError(
                f"{migration.filename} was written for schema {found['schema']} and names "
                f"its objects there, but this run migrates schema {schema}; nothing was "
                f"applied. Write one for it (baseline-file --schema {schema}, in a folder of "
                "its own), or run without it: move it out of the folder to replay the files"
            )
