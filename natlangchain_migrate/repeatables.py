"""Repeatable migrations: ``R__name.sql`` files (Flyway's convention), re-applied whenever
their checksum changes.

Views and functions are their natural content: a file that is always the whole
current definition (``CREATE OR REPLACE``). They run after every versioned
migration of a run, in name order, each in its own transaction with its row in
``schema_repeatables``. Deciding which are pending is pure, like ``plan.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.directives import parse_directives
from natlangchain_migrate.discovery import (
    Migration,
    _as_traversable,
    checksum,
    is_repeatable_file,
    read_text,
    shipped_migrations_dir,
)
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.plan import AppliedMigration, MigrationPlan, State, StatusEntry

if TYPE_CHECKING:
    from importlib.abc import Traversable

_FILE = re.compile(r"^R__(?P<label>[A-Za-z0-9_]+)\.sql$")

# A repeatable has no version; inside the apply machinery (which speaks Migration) it
# carries this one, and everything shown to users says None instead.
REPEATABLE_VERSION = -1


class Repeatable(Migration):
    """One ``R__name.sql`` file: a Migration whose version is REPEATABLE_VERSION."""

    __slots__ = ()


def is_repeatable(migration: Migration) -> bool:
    return isinstance(migration, Repeatable)


def version_of(migration: Migration) -> int | None:
    """The version a user sees: None for a repeatable."""
    return None if isinstance(migration, Repeatable) else migration.version


def load_repeatables(directory: Traversable | Path | str | None = None) -> list[Repeatable]:
    """Every ``R__name.sql`` in ``directory`` (default: the shipped ones), by name.

    Raises ConfigurationError for a misnamed ``R__`` file (a down file among them:
    rollback never touches repeatables) or a no-transaction directive.
    """
    folder = shipped_migrations_dir() if directory is None else _as_traversable(directory)
    if not folder.is_dir():
        return []  # load_migrations says what is wrong with the folder
    found: list[Repeatable] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not is_repeatable_file(entry.name) or not entry.is_file():
            continue
        if _FILE.match(entry.name) is None:
            raise ConfigurationError(
                f"{entry.name}: repeatable migrations are named R__name.sql (letters, digits, "
                "underscores) and have no down file (rollback leaves them alone); rename or "
                "remove it"
            )
        sql = read_text(entry)
        directives = parse_directives(entry.name, sql)
        if directives.no_transaction:
            raise ConfigurationError(
                f"{entry.name}:1: a repeatable migration always runs in one transaction with "
                "its ledger row; remove the no-transaction directive (put statements such as "
                "CREATE INDEX CONCURRENTLY in a versioned no-transaction file)"
            )
        found.append(
            Repeatable(
                version=REPEATABLE_VERSION,
                name=entry.name.removesuffix(".sql"),
                filename=entry.name,
                sql=sql,
                checksum=checksum(sql),
                directives=directives,
            )
        )
    return found


def with_repeatables(
    plan: MigrationPlan,
    repeatables: Sequence[Repeatable],
    recorded: Iterable[AppliedMigration],
    *,
    release: int | None = None,
) -> MigrationPlan:
    """The plan with the repeatables added: those never applied, or applied with another
    checksum, are pending after every versioned migration, in name order.

    Each gets a line in ``plan.repeatables``: APPLIED, PENDING (new or changed), FUTURE
    or MISSING (recorded, file gone: shown, never an error, as in Flyway). FUTURE is a
    row that a newer release (``row.release`` above this one's ``release``) applied: in
    a rolling deploy the old release must not put its older view back, so it is neither
    pending nor drift. A row with no release (written before the column existed) or a
    runner with no versioned file behaves as before: re-applied on a checksum change.
    """
    rows = {row.name: row for row in recorded}
    entries: list[StatusEntry] = []
    pending: list[Migration] = []
    for repeatable in repeatables:
        row = rows.pop(repeatable.name, None)
        state = State.APPLIED
        if row is not None and row.checksum != repeatable.checksum and _newer(row, release):
            state = State.FUTURE
        elif row is None or row.checksum != repeatable.checksum:
            state = State.PENDING
            pending.append(repeatable)
        entries.append(StatusEntry(REPEATABLE_VERSION, repeatable.name, state, repeatable, row))
    for name in sorted(rows):
        gone = State.FUTURE if _newer(rows[name], release) else State.MISSING
        entries.append(StatusEntry(REPEATABLE_VERSION, name, gone, None, rows[name]))
    if not entries:
        return plan
    return plan._replace(pending=[*plan.pending, *pending], repeatables=tuple(entries))


def _newer(row: AppliedMigration, release: int | None) -> bool:
    """Whether a newer release than ``release`` applied the row."""
    return release is not None and row.release is not None and row.release > release
