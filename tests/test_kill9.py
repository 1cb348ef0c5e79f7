"""A runner killed with SIGKILL at any moment: the next plain run finishes the job exactly once.

These fail on a runner that commits a no-transaction statement and journals it in a
second round trip: a kill between the two makes the rerun repeat the statement.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import asyncpg
import pytest

from harness.faults import Reference, clean_reference, kill_and_rerun, run_trials, summary
from harness.history import NO_TRANSACTION_HEADER, write_history
from tests.conftest import ledger_rows, migration_locks_held

ISSUE_FILES = 20
ISSUE_PAIRS = 30


def _write_issue_history(folder: Path) -> None:
    """The issue's reproduction: no-transaction files of plain, non-idempotent DDL."""
    for version in range(1, ISSUE_FILES + 1):
        pairs = "".join(
            f"CREATE TABLE t{version}_{k} (id int PRIMARY KEY, note text);\n"
            f"ALTER TABLE t{version}_{k} ADD COLUMN extra int;\n"
            for k in range(1, ISSUE_PAIRS + 1)
        )
        path = folder / f"{version:03d}_tables_{version}.sql"
        path.write_text(NO_TRANSACTION_HEADER + pairs, encoding="utf-8")


@pytest.fixture(scope="module")
def issue_reference(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The issue's files, and how long a clean apply of them takes on this machine."""
    folder = tmp_path_factory.mktemp("issue")
    _write_issue_history(folder)
    return clean_reference(admin_url, folder)


async def _tables_with_extra_column(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name ~ '^t[0-9]+_[0-9]+$' AND column_name = 'extra'"
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("trial", [1, 2, 3, 4, 5])
def test_rerun_after_kill_9_mid_no_transaction_apply_finishes_every_file_once(
    database_url: str, issue_reference: Reference, trial: int
) -> None:
    # The issue killed after a random 0.4-2.5 s. A delay from the start lands past the end
    # of the run on a machine faster or less loaded than the reference run, so the kill is
    # placed by progress: a short random delay after a random file of the middle began.
    per_file = (issue_reference.clean_seconds - issue_reference.first_migration_s) / ISSUE_FILES
    after = random.randint(2, ISSUE_FILES - 4)
    delay = random.uniform(0.0, per_file)
    result = kill_and_rerun(
        database_url, issue_reference, delay, number=trial, after_applying=after
    )
    assert result.killed_mid_run, f"the CLI finished within {delay:.2f} s; nothing was killed"
    assert result.rerun_exit == 0, result.details()
    assert asyncio.run(_tables_with_extra_column(database_url)) == ISSUE_FILES * ISSUE_PAIRS
    rows = asyncio.run(ledger_rows(database_url))
    assert [row["version"] for row in rows] == list(range(1, ISSUE_FILES + 1))
    assert all(row["complete"] for row in rows)
    assert asyncio.run(migration_locks_held(database_url)) == 0
    assert not result.failures, result.details()


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "trials"), [("no-transaction", 3), ("transaction", 2)])
def test_kill_9_harness_on_a_generated_history_finds_every_invariant_held(
    admin_url: str, tmp_path: Path, mode: str, trials: int
) -> None:
    folder = tmp_path / "history"
    write_history(folder, 60, no_transaction=mode == "no-transaction", seed=12)
    reference = clean_reference(admin_url, folder)
    # Few trials: spend them after start-up, where the migrations run.
    results = run_trials(
        admin_url, reference, trials, seed=12, earliest=reference.first_migration_s
    )
    failed = [trial for trial in results if trial.failures]
    assert not failed, "\n\n".join([summary(results), *(trial.details() for trial in failed)])


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["term", "terminate-backend"])
def test_other_faults_on_a_generated_history_leave_every_invariant_held(
    admin_url: str, tmp_path: Path, fault: str
) -> None:
    """SIGTERM must end the run with 143 and pg_terminate_backend with 3; either way a
    plain rerun converges on the clean state."""
    folder = tmp_path / "history"
    write_history(folder, 60, no_transaction=True, seed=13)
    reference = clean_reference(admin_url, folder)
    results = run_trials(
        admin_url, reference, 2, seed=13, earliest=reference.first_migration_s, fault=fault
    )
    failed = [trial for trial in results if trial.failures]
    assert not failed, "\n\n".join([summary(results), *(trial.details() for trial in failed)])
