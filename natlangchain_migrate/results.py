"""What a run hands back to its caller.

Records here and elsewhere in the package are NamedTuples, not dataclasses: every
replica's start-up defines them, and defining a dataclass costs about a millisecond.
"""

from __future__ import annotations

from typing import NamedTuple


class MigrationResult(NamedTuple):
    """One migration this run applied (or, in a dry run, would apply); ``version`` is None
    for a repeatable (``R__name.sql``). ``file`` is its path from the migrations folder
    (golang-migrate's ``001_x.up.sql``, prisma's ``<folder>/migration.sql``), as events
    carry it; ``name`` is not always that file's name without ``.sql``."""

    version: int | None
    name: str
    duration_ms: float = 0.0
    status: str = "applied"
    file: str | None = None


class ContractResult(NamedTuple):
    """A contract part (``NNN_name.contract.sql``) this run applied, or in a dry run would
    apply; ``forced`` when it ran despite alive replicas of an older release."""

    version: int
    name: str
    duration_ms: float = 0.0
    forced: bool = False
    status: str = "applied"


class MigrationReport:
    """The outcome of ``migrate()``.

    ``applied`` is what this run committed, each with its duration;
    ``already_applied`` the versions the ledger had before; ``pending`` what a
    dry run would apply (empty after a real run); ``skipped`` what ``skip=``
    left out; ``future`` the versions a newer release applied (above every local
    file), which this run left as they are, and ``future_repeatables`` the names of the
    ``R__`` files a newer release last applied (left as that release applied them).
    """

    def __init__(
        self,
        *,
        already_applied: list[int] | None = None,
        skipped: list[int] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.applied: list[MigrationResult] = []
        self.already_applied = already_applied or []
        self.pending: list[MigrationResult] = []
        self.skipped = skipped or []
        self.future: list[int] = []
        self.future_repeatables: list[str] = []
        self.dry_run = dry_run
        self.duration_ms = 0.0
        # Contract parts run at start-up (``auto_contract``), after the expand parts.
        self.contracts: list[ContractResult] = []

    def __repr__(self) -> str:
        return (
            f"MigrationReport(applied={self.applied!r}, already_applied={self.already_applied!r}, "
            f"pending={self.pending!r}, skipped={self.skipped!r}, future={self.future!r}, "
            f"dry_run={self.dry_run!r}, duration_ms={self.duration_ms!r})"
        )

    @property
    def up_to_date(self) -> bool:
        """True when the run found nothing to apply."""
        return not self.applied and not self.pending
