"""What a fleet run hands back: one result per target and the run's outcome, as text lines
(one per target as it finishes, then a summary) or one JSON object, and its exit code."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, NamedTuple

from natlangchain_migrate.errors import ExitCode


class Outcome(StrEnum):
    """What happened to one target."""

    UP_TO_DATE = "up_to_date"  # the catalog query found nothing to do: never connected to
    APPLIED = "applied"  # behind, and its run finished (perhaps another run had done it)
    FAILED = "failed"  # its run failed: the failing migration rolled back, the error kept
    NOT_STARTED = "not_started"  # behind, but the rollout stopped before it (canary, limit)


class TargetResult(NamedTuple):
    """One target's result: version before and after, what this run applied, how long."""

    id: str
    database: str
    schema: str
    outcome: Outcome
    version_before: int | None = None
    version_after: int | None = None
    applied: tuple[int, ...] = ()
    duration_ms: float = 0.0
    error: str | None = None
    exit_code: int = 0  # the single run's exit code (a failure's class)
    canary: bool = False

    def line(self) -> str:
        """One line for a person: ``tenant_7: applied 2, 3 (1 -> 3) in 41 ms``."""
        versions = f"{_v(self.version_before)} -> {_v(self.version_after)}"
        if self.outcome is Outcome.FAILED:
            done = f" after applying {_versions(self.applied)}" if self.applied else ""
            return f"{self.id}: FAILED{done} (exit {self.exit_code}): {self.error}"
        if self.outcome is Outcome.APPLIED:
            what = f"applied {_versions(self.applied)}" if self.applied else "nothing left to apply"
            return f"{self.id}: {what} ({versions}) in {self.duration_ms:.0f} ms"
        if self.outcome is Outcome.NOT_STARTED:
            return f"{self.id}: not started (at {_v(self.version_before)})"
        return f"{self.id}: up to date (at {_v(self.version_before)})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "database": self.database,
            "schema": self.schema,
            "outcome": self.outcome.value,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "applied": list(self.applied),
            "duration_ms": round(self.duration_ms, 1),
            "error": self.error,
            "exit_code": self.exit_code,
            "canary": self.canary,
        }


class FleetReport:
    """The outcome of ``migrate_fleet()``: ``results`` (one per target, in id order),
    ``stopped`` (why the rollout stopped early, or None), the databases and connections."""

    def __init__(self) -> None:
        self.results: list[TargetResult] = []
        self.stopped: str | None = None
        self.duration_ms = 0.0
        self.databases = 0
        self.connections = 0  # opened by this run, catalog queries included

    def count(self, outcome: Outcome) -> int:
        return sum(result.outcome is outcome for result in self.results)

    @property
    def failed(self) -> list[TargetResult]:
        return [result for result in self.results if result.outcome is Outcome.FAILED]

    @property
    def exit_code(self) -> int:
        """27 when the rollout stopped early, 26 when targets failed, else 0."""
        if self.stopped is not None:
            return ExitCode.FLEET_STOPPED
        return ExitCode.FLEET_FAILED if self.failed else ExitCode.OK

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(outcome)} {outcome.value}" for outcome in Outcome)
        stopped = f"; stopped: {self.stopped}" if self.stopped else ""
        return (
            f"fleet: {len(self.results)} targets in {self.databases} database(s): {counts} "
            f"in {self.duration_ms:.0f} ms{stopped}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "exit_code": int(self.exit_code),
            "stopped": self.stopped,
            "duration_ms": round(self.duration_ms, 1),
            "databases": self.databases,
            "connections": self.connections,
            "counts": {outcome.value: self.count(outcome) for outcome in Outcome},
            "targets": [result.as_dict() for result in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


class TargetState(NamedTuple):
    """One target as ``--status``/``--check`` over the fleet sees it."""

    id: str
    state: str  # up to date | pending | drifted | failed part-way | unreachable
    applied: int
    total: int | None
    highest: int | None
    detail: str = ""

    @property
    def exit_code(self) -> int:
        return _STATE_CODES.get(self.state, ExitCode.CHECK_PENDING)

    def line(self) -> str:
        total = "" if self.total is None else f" of {self.total}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.id}: {self.state}: {self.applied}{total} applied{detail}"


_STATE_CODES = {
    "up to date": ExitCode.OK,
    "pending": ExitCode.CHECK_PENDING,
    "drifted": ExitCode.CHECK_DRIFT,
    "failed part-way": ExitCode.CHECK_FAILED,
    "unreachable": ExitCode.UNREACHABLE,
}


def status_exit_code(states: list[TargetState]) -> int:
    """The fleet's --check code: the worst target's (3 unreachable, 12, 11, 10, else 0)."""
    codes = {state.exit_code for state in states}
    for code in (ExitCode.UNREACHABLE, ExitCode.CHECK_FAILED, ExitCode.CHECK_DRIFT):
        if code in codes:
            return code
    return ExitCode.CHECK_PENDING if ExitCode.CHECK_PENDING in codes else ExitCode.OK


def status_summary(states: list[TargetState]) -> str:
    names = ("up to date", "pending", "drifted", "failed part-way", "unreachable")
    counts = ", ".join(f"{sum(s.state == name for s in states)} {name}" for name in names)
    return f"fleet: {len(states)} targets: {counts}"


def _v(version: int | None) -> str:
    return "none" if version is None else str(version)


def _versions(versions: tuple[int, ...]) -> str:
    return ", ".join(str(version) for version in versions)
