"""Deciding what to do: a pure function of (files, ledger rows, target, skips).

Nothing here touches the database, so every rule of ordering, skipping,
drift, future rows and resuming is unit-tested with plain values.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import DriftError, FutureMigrationsError, OutOfOrderError


class State(StrEnum):
    """What ``--status`` says of one version.

    FAILED is a no-transaction migration that stopped part-way: the ledger keeps
    its row with ``complete = false`` and the statements it finished. FUTURE is a
    row above the newest local file: a newer release applied it (during a rolling
    deploy, or after a rollout was undone); it is not drift, and nothing forgets it.
    """

    APPLIED = "APPLIED"
    PENDING = "PENDING"
    SKIPPED = "SKIPPED"
    CHANGED = "CHANGED"
    MISSING = "MISSING"
    FAILED = "FAILED"
    FUTURE = "FUTURE"


class AppliedMigration(NamedTuple):
    """One row of the ledger (schema_migrations).

    ``checksum`` is None for rows adopted from the seed's old three-column
    table; ``statements_done`` counts the statements a no-transaction migration
    finished, and ``complete`` is False while it has not finished them all.
    """

    version: int
    name: str
    applied_at: datetime | None = None
    checksum: str | None = None
    execution_ms: float | None = None
    applied_by: str | None = None
    complete: bool = True
    statements_done: int = 0
    last_error: str | None = None
    # schema_repeatables only: the release (highest version of its folder) that applied it.
    release: int | None = None


class StatusEntry(NamedTuple):
    """One line of ``--status``: a version, its name, its state, its file and what the
    ledger says."""

    version: int
    name: str
    state: State
    file: Migration | None = None
    row: AppliedMigration | None = None

    @property
    def file_checksum(self) -> str | None:
        """The file's checksum, None without a file; asked for only where shown or
        compared (a big file is read for it then: see discovery.BigMigration)."""
        return None if self.file is None else self.file.checksum

    @property
    def verified(self) -> bool:
        """False for an applied row that has no checksum yet (adopted, awaiting --repair)."""
        return self.row is None or self.row.checksum is not None


class MigrationPlan(NamedTuple):
    """What a run would do: migrations to apply in order, every version's state, and
    where incomplete no-transaction migrations resume."""

    pending: list[Migration]
    entries: list[StatusEntry]
    resume_from: dict[int, int]
    # R__name.sql files, each APPLIED, PENDING, FUTURE or MISSING (see repeatables.py);
    # never drift.
    repeatables: tuple[StatusEntry, ...] = ()

    @property
    def changed(self) -> list[StatusEntry]:
        return [entry for entry in self.entries if entry.state is State.CHANGED]

    @property
    def missing(self) -> list[StatusEntry]:
        return [entry for entry in self.entries if entry.state is State.MISSING]

    @property
    def failed(self) -> list[StatusEntry]:
        return [entry for entry in self.entries if entry.state is State.FAILED]

    @property
    def future(self) -> list[StatusEntry]:
        """Rows a newer release applied: above every local file, never drift."""
        return [entry for entry in self.entries if entry.state is State.FUTURE]

    @property
    def future_repeatables(self) -> list[StatusEntry]:
        """Repeatables a newer release last applied: this release leaves them alone."""
        return [entry for entry in self.repeatables if entry.state is State.FUTURE]

    @property
    def recorded_count(self) -> int:
        """How many versions the ledger records as applied (drifted ones included): the
        one count ``--status`` and ``--check`` both print."""
        return sum(entry.state in (State.APPLIED, State.CHANGED) for entry in self.entries)

    @property
    def applied(self) -> list[StatusEntry]:
        return [entry for entry in self.entries if entry.state is State.APPLIED]


def plan_migrations(
    migrations: Sequence[Migration],
    ledger: Sequence[AppliedMigration],
    *,
    target: int | None = None,
    skip: Collection[int] = (),
    squashed_up_to: int | None = None,
) -> MigrationPlan:
    """Decide, for every version known to the files or the ledger, its state.

    Pending are the files with no complete ledger row, up to ``target``, minus
    ``skip``; a skipped or lower version missing from the ledger is applied
    later even when higher ones are applied (out of order, on purpose). An
    incomplete no-transaction migration is pending and resumes after the
    statements its row says are done. A row without a file is FUTURE above the
    newest file (a newer release wrote it) and MISSING below it (drift), except at or
    below ``squashed_up_to`` (the newest baseline file's version): APPLIED, its file
    squashed into the baseline.
    """
    files = {migration.version: migration for migration in migrations}
    rows = {row.version: row for row in ledger}
    newest = newest_version(migrations)
    entries: list[StatusEntry] = []
    pending: list[Migration] = []
    resume_from: dict[int, int] = {}
    for version in sorted(files.keys() | rows.keys()):
        migration, row = files.get(version), rows.get(version)
        if migration is None:
            if row is not None and squashed_up_to is not None and version <= squashed_up_to:
                entries.append(StatusEntry(version, row.name, State.APPLIED, None, row))
            elif row is not None:
                gone = State.FUTURE if newest is None or version > newest else State.MISSING
                entries.append(StatusEntry(version, row.name, gone, None, row))
            continue
        state = _state_of(migration, row, skip)
        entries.append(StatusEntry(version, migration.name, state, migration, row))
        wanted = (target is None or version <= target) and version not in skip
        if wanted and state in (State.PENDING, State.FAILED):
            pending.append(migration)
            if row is not None:
                resume_from[version] = row.statements_done
    return MigrationPlan(pending=pending, entries=entries, resume_from=resume_from)


def newest_version(migrations: Sequence[Migration]) -> int | None:
    """The highest version among the files: what this release ships. A repeatable (R__,
    stored as version -1) has no version and never counts."""
    return max((m.version for m in migrations if m.version >= 0), default=None)


def _state_of(
    migration: Migration,
    row: AppliedMigration | None,
    skip: Collection[int],
) -> State:
    if row is None:
        return State.SKIPPED if migration.version in skip else State.PENDING
    if not row.complete:
        return State.FAILED
    if row.checksum is not None and row.checksum != migration.checksum:
        return State.CHANGED
    return State.APPLIED


def _file_of(name: str, plan: MigrationPlan) -> str:
    """The file a vanished migration had, in the folder's layout (name is the ledger's):
    sqlx writes ``<version>_<name>.up.sql`` for a reversible migration and
    ``<version>_<name>.sql`` for a simple one, told apart by the folder's other files."""
    files = [entry.file.filename for entry in plan.entries if entry.file is not None]
    layout = next((e.file.layout for e in plan.entries if e.file is not None), None)
    if layout == "golang-migrate":
        return f"{name}.up.sql"
    if layout == "sqlx":
        reversible = {file.endswith(".up.sql") for file in files}
        if reversible == {True}:
            return f"{name}.up.sql"
        return f"{name}.sql" if reversible == {False} else f"{name}.up.sql or {name}.sql"
    return f"{name}/migration.sql" if layout == "prisma" else f"{name}.sql"


def _changed(entry: StatusEntry) -> str:
    """What to do about an applied file whose checksum changed, naming the file as it is in
    the folder (golang-migrate's ``.up.sql``, prisma's ``<folder>/migration.sql``) and, when
    the ledger recorded another name for its version, the rename that made it so."""
    file = entry.file.filename if entry.file is not None else f"{entry.name}.sql"
    applied_as = entry.row.name if entry.row is not None else entry.name
    if entry.file is not None and applied_as != entry.file.name:
        return (
            f"migration {entry.version:03d} was applied as {applied_as}, and {file} has that "
            f"version here with other contents: if {applied_as} was renamed (to another "
            f"version), give it its name back and {file} a version of its own; else restore "
            f"{file}, or put the change in a new migration, or accept it with --repair"
        )
    return (
        f"migration {entry.version:03d} was applied with a different checksum; restore "
        f"{file}, or put the change in a new migration, or accept the file as it is "
        "with --repair"
    )


def raise_on_drift(plan: MigrationPlan, *, refuse_future: bool = False) -> None:
    """Refuse to go on when an applied file changed or is gone; with ``refuse_future``,
    also when the database holds rows of a newer release (FutureMigrationsError).

    No advice here suggests --repair for a future row: forgetting it would make the
    newer release run that migration again.
    """
    problems = [_changed(entry) for entry in plan.changed] + [
        f"migration {entry.version:03d} ({entry.name}) is applied but its file is gone; "
        f"restore {_file_of(entry.name, plan)}, or, if the file was removed on purpose, "
        "forget its row with --repair (that removes only the rows of vanished files and runs "
        "no SQL)"
        for entry in plan.missing
    ]
    if problems:
        raise DriftError("; ".join(problems))
    if refuse_future and (plan.future or plan.future_repeatables):
        raise FutureMigrationsError(
            f"{future_sentence(plan)}, and future migrations are refused (--refuse-future, "
            "NATLANGCHAIN_MIGRATE_REFUSE_FUTURE, refuse_future=); deploy the release that "
            "ships them, or run without refusing them (an older release then runs on and "
            "leaves them as they are)",
            versions=[entry.version for entry in plan.future],
        )


def future_sentence(plan: MigrationPlan) -> str:
    """What a newer release left, for messages: "the database holds migration 004 (004_x)
    and repeatable R__v as of release 004, applied by a newer release (the newest file here
    is 003)"."""
    parts = []
    if plan.future:
        named = ", ".join(f"{entry.version:03d} ({entry.name})" for entry in plan.future)
        parts.append(f"{'migration' if len(plan.future) == 1 else 'migrations'} {named}")
    if plan.future_repeatables:
        named = ", ".join(
            f"{entry.name} as of release {entry.row.release:03d}"
            for entry in plan.future_repeatables
            if entry.row is not None and entry.row.release is not None
        )
        many = len(plan.future_repeatables) > 1
        parts.append(f"{'repeatables' if many else 'repeatable'} {named}")
    files = [entry.version for entry in plan.entries if entry.file is not None]
    here = f"the newest file here is {max(files):03d}" if files else "no file here"
    return f"the database holds {' and '.join(parts)}, applied by a newer release ({here})"


def highest_recorded(plan: MigrationPlan) -> int | None:
    """The highest version the ledger holds a row for, or None for an empty ledger."""
    return max((entry.version for entry in plan.entries if entry.row is not None), default=None)


def out_of_order(plan: MigrationPlan) -> list[Migration]:
    """Pending versioned migrations lower than the highest version the ledger holds."""
    highest = highest_recorded(plan)
    if highest is None:
        return []
    recorded = {entry.version for entry in plan.entries if entry.row is not None}
    # A repeatable (R__) has no version (it is stored as -1): order does not apply to it.
    return [m for m in plan.pending if 0 <= m.version < highest and m.version not in recorded]


def raise_on_out_of_order(plan: MigrationPlan) -> None:
    """Strict order: refuse a pending version lower than the highest applied one."""
    late = out_of_order(plan)
    if late:
        highest = highest_recorded(plan)
        raise OutOfOrderError(
            f"{late[0].filename} is pending but version {highest} is already applied, and "
            "strict order refuses out-of-order applies (--strict-order, "
            "NATLANGCHAIN_MIGRATE_STRICT_ORDER, strict_order=); renumber the file above "
            f"{highest}, or run once without strict order to apply it out of order"
        )
