"""What a run hands back to its caller."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MigrationResult:
    """One migration this run applied (or, in a dry run, would apply)."""

    version: int
    name: str
    duration_ms: float = 0.0
    status: str = "applied"


@dataclass
class MigrationReport:
    """The outcome of ``migrate()``.

    ``applied`` is what this run committed, each with its duration;
    ``already_applied`` the versions the ledger had before; ``pending`` what a
    dry run would apply (empty after a real run); ``skipped`` what ``skip=``
    left out.
    """

    applied: list[MigrationResult] = field(default_factory=list)
    already_applied: list[int] = field(default_factory=list)
    pending: list[MigrationResult] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    dry_run: bool = False
    duration_ms: float = 0.0

    @property
    def up_to_date(self) -> bool:
        """True when the run found nothing to apply."""
        return not self.applied and not self.pending
