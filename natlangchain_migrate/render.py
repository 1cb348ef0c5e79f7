"""What the CLI prints: the status table, --check's one line, the dry-run and rollback
plans, each as text or (``--json``) as JSON. The library returns values; only the command
line turns them into output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from natlangchain_migrate.baseline_files import ledger_rows
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.ledger import BASELINE
from natlangchain_migrate.plan import MigrationPlan, State, StatusEntry

if TYPE_CHECKING:
    from natlangchain_migrate.contract_plan import ContractEntry
    from natlangchain_migrate.discovery import Migration
    from natlangchain_migrate.results import MigrationResult
    from natlangchain_migrate.undo import RollbackResult

_MARKS = {
    State.APPLIED: "✓",
    State.PENDING: "○",
    State.SKIPPED: "○",
    State.CHANGED: "✗",
    State.MISSING: "✗",
    State.FAILED: "✗",
    State.FUTURE: "↑",
}


def print_status(plan: MigrationPlan, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(status_objects(plan), indent=2))
        return ExitCode.OK
    print("Migration Status")
    print("=" * 50)
    # On a new database, the baseline file a run applies, where its version sorts.
    stand_in = _baseline_stand_in(plan)
    unshown = stand_in
    for entry in plan.entries:
        if unshown is not None and entry.version > unshown.version:
            print(_baseline_line(unshown))
            unshown = None
        note = _version_note(entry, stand_in)
        print(f"  {_MARKS[entry.state]} {entry.name}: {entry.state.value}{note}")
    if unshown is not None:
        print(_baseline_line(unshown))
    print(f"\nApplied: {plan.recorded_count} / {_local_count(plan)}{_future_note(plan)}")
    if plan.repeatables:
        print("\nRepeatable (applied after the versioned ones, whenever their file changes)")
        for entry in plan.repeatables:
            note = ""
            if entry.state is State.PENDING and entry.row is not None:
                note = " (changed since applied)"
            elif entry.state is State.MISSING:
                note = " (no file here: removed, or a newer release's; ignored by runs)"
            elif entry.state is State.FUTURE and entry.row and entry.row.release is not None:
                note = f" (applied by a newer release, {entry.row.release:03d}; left as it is)"
            print(f"  {_MARKS[entry.state]} {entry.name}: {entry.state.value}{note}")
    return ExitCode.OK


def _version_note(entry: StatusEntry, stand_in: Migration | None) -> str:
    covered = baseline_object(stand_in)["versions"] if stand_in else []
    if stand_in is not None and entry.state is State.PENDING and entry.version in covered:
        return f" (a new database applies {stand_in.filename} instead)"
    if entry.state is State.FAILED and entry.row is not None:
        return f" (at statement {entry.row.statements_done + 1})"
    if entry.state is State.APPLIED and not entry.verified:
        return " (unverified: no checksum, run --repair)"
    if entry.state is State.APPLIED and entry.row and entry.row.applied_by == BASELINE:
        return " (baseline)"
    if entry.state is State.FUTURE:
        return " (applied by a newer release; no file here)"
    return ""


def _baseline_stand_in(plan: MigrationPlan) -> Migration | None:
    """The baseline file a run would apply (a new database), else None."""
    return next((m for m in plan.pending if m.baseline_covers is not None), None)


def baseline_object(stand_in: Migration) -> dict[str, Any]:
    """What ``--status --json`` and ``--check --json`` say of the baseline file a run would
    apply: the file, and the versions whose ledger rows it writes instead of running them."""
    return {"file": stand_in.filename, "versions": [m.version for m in ledger_rows(stand_in)]}


def _baseline_line(stand_in: Migration) -> str:
    return f"  {_MARKS[State.PENDING]} {stand_in.name}: PENDING ({_instead(stand_in)})"


def _instead(stand_in: Migration) -> str:
    """``a new database applies it instead of 001-003``; with the files below it squashed,
    ``... applies it for the versions up to 003``."""
    if not stand_in.baseline_covers:
        return f"a new database applies it for the versions up to {stand_in.version:03d}"
    first = stand_in.baseline_covers[0].version
    span = f"{first:03d}-{stand_in.version:03d}" if first != stand_in.version else f"{first:03d}"
    return f"a new database applies it instead of {span}"


def status_objects(plan: MigrationPlan) -> list[dict[str, Any]]:
    """``--status --json``'s objects: the versions, then the repeatables. On a new database
    a version the baseline file stands in for carries ``baseline`` (``baseline_object``);
    when no file of the baseline's own version is here, an object of its own (named
    ``NNN_name.baseline``, as the ledger row it writes) comes after the versions it covers."""
    stand_in = _baseline_stand_in(plan)
    covering = baseline_object(stand_in) if stand_in else None
    objects: list[dict[str, Any]] = []
    own_row = stand_in is not None and not any(e.version == stand_in.version for e in plan.entries)
    for entry in plan.entries:
        if own_row and stand_in and entry.version > stand_in.version:
            objects.append(_baseline_status_object(stand_in))
            own_row = False
        in_it = covering and entry.version in covering["versions"]
        in_it = bool(in_it) and entry.state is State.PENDING
        objects.append(_status_object(entry) | {"baseline": covering if in_it else None})
    if own_row and stand_in:
        objects.append(_baseline_status_object(stand_in))
    return objects + [
        _status_object(entry, repeatable=True) | {"baseline": None} for entry in plan.repeatables
    ]


def _baseline_status_object(stand_in: Migration) -> dict[str, Any]:
    """The baseline's own version's object, as the row it would write."""
    return {
        "version": stand_in.version,
        "repeatable": False,
        "name": stand_in.name,
        "state": State.PENDING.value,
        "checksum": stand_in.checksum,
        "applied_checksum": None,
        "applied_at": None,
        "execution_ms": None,
        "applied_by": None,
        "statements_done": None,
        "baseline": baseline_object(stand_in),
    }


def _status_object(entry: StatusEntry, *, repeatable: bool = False) -> dict[str, Any]:
    row = entry.row
    return {
        "version": None if repeatable else entry.version,
        "repeatable": repeatable,
        **entry_fields(entry),
        "applied_by": row.applied_by if row else None,
        "statements_done": row.statements_done if row and not row.complete else None,
    }


def entry_fields(entry: StatusEntry | ContractEntry) -> dict[str, Any]:
    """The fields a version's ``--status --json`` object and a contract part's share."""
    row = entry.row
    return {
        "name": entry.name,
        "state": entry.state.value,
        "checksum": entry.file_checksum,
        "applied_checksum": row.checksum if row else None,
        "applied_at": row.applied_at.isoformat() if row and row.applied_at else None,
        "execution_ms": row.execution_ms if row else None,
    }


def _local_count(plan: MigrationPlan) -> int:
    """The versions this release knows of (future rows are a newer release's)."""
    return len(plan.entries) - len(plan.future)


def _future_note(plan: MigrationPlan) -> str:
    """The suffix ``, 1 future (004)`` when a newer release applied versions above the
    files, and ``, 1 future repeatable (R__v)`` for repeatables it last applied; empty
    otherwise."""
    note = ""
    if plan.future:
        versions = ", ".join(f"{entry.version:03d}" for entry in plan.future)
        note = f", {len(plan.future)} future ({versions})"
    if plan.future_repeatables:
        names = ", ".join(entry.name for entry in plan.future_repeatables)
        count = len(plan.future_repeatables)
        note += f", {count} future {'repeatables' if count > 1 else 'repeatable'} ({names})"
    return note


def print_check(plan: MigrationPlan, *, as_json: bool) -> int:
    """Exit 0 when current for this release: rows a newer release applied (FUTURE) count
    as current, so an old replica stays ready during a rolling deploy."""
    pending = [e.version for e in plan.entries if e.state is State.PENDING]
    pending_repeatables = [e.name for e in plan.repeatables if e.state is State.PENDING]
    drifted = [e.version for e in plan.changed + plan.missing]
    failed = [e.version for e in plan.failed]
    stand_in = _baseline_stand_in(plan)
    if failed:
        code, state, count = ExitCode.CHECK_FAILED, "failed part-way", len(failed)
    elif drifted:
        code, state, count = ExitCode.CHECK_DRIFT, "drifted", len(drifted)
    elif pending or pending_repeatables or stand_in:
        code, state = ExitCode.CHECK_PENDING, "pending"
        # A squashed history's baseline file has no version of its own among the files.
        count = max(len(pending) + len(pending_repeatables), 1)
    else:
        code, state, count = ExitCode.OK, "up to date", 0
    if as_json:
        summary = {
            "state": state,
            "exit_code": int(code),
            "applied": plan.recorded_count,
            "total": _local_count(plan),
            "pending": pending,
            "pending_repeatables": pending_repeatables,
            "drifted": drifted,
            "failed": failed,
            "future": [e.version for e in plan.future],
            "future_repeatables": [e.name for e in plan.future_repeatables],
            "baseline": baseline_object(stand_in) if stand_in else None,
        }
        print(json.dumps(summary, indent=2))
    else:
        what = f"{count} {state}" if count else state
        repeatables = ""
        if plan.repeatables:
            # A newer release's repeatable is current for this one (the readiness probe).
            current = sum(e.state in (State.APPLIED, State.FUTURE) for e in plan.repeatables)
            total = sum(e.state is not State.MISSING for e in plan.repeatables)
            repeatables = f", {current} of {total} repeatable current"
        applied = f"{plan.recorded_count} of {_local_count(plan)} applied"
        baseline = f"; {stand_in.filename}: {_instead(stand_in)}" if stand_in else ""
        print(f"{what}: {applied}{repeatables}{_future_note(plan)}{baseline}")
    return code


def print_rollback_plan(undone: Sequence[RollbackResult], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([u._asdict() for u in undone], indent=2))
        return
    if not undone:
        print("Nothing to roll back: no migration is applied.")
        return
    print("Would roll back, newest first, each in its own transaction:")
    for item in undone:
        if item.down_sql is None:
            print(f"\n-- {item.name}: no down file; only its ledger row would be removed")
        else:
            print(f"\n-- {item.name}: down file\n{item.down_sql.rstrip()}")


def print_dry_run(pending: Sequence[MigrationResult], *, as_json: bool) -> None:
    if as_json:
        found = [{"version": m.version, "name": m.name, "file": m.file} for m in pending]
        print(json.dumps(found, indent=2))
        return
    if not pending:
        print("Nothing to apply: the database is up to date.")
        return
    print("Would apply, in order:")
    for migration in pending:
        print(f"  {migration.name}")
