"""A rolling deploy under traffic, whole system: four uvicorn replicas of release A replaced by
release B one by one while a load generator reads and writes (harness/rolling.py).

B renames the column A reads and writes. As expand (new column, dual-write trigger,
backfill, at the first B replica's start-up) and contract (``natlangchain-migrate contract``
once the last A replica is gone), no request fails; done in one step (the control), the A
replicas still serving fail. Speed is not asserted here: benchmarks/rolling_deploy.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from harness.pgcluster import PASSWORD
from harness.releases import Rename, write_release
from harness.rolling import RolloutResult, rolling_deploy
from harness.servers import json_events
from harness.sql import fetch
from natlangchain_migrate.errors import ExitCode
from tests.conftest import run_cli


def _failures(result: RolloutResult) -> str:
    """The failures by replica and reason, for an assertion's message."""
    counts = Counter((each.replica, each.failure) for each in result.failures)
    return "\n".join(f"{n} x {replica}: {why}" for (replica, why), n in counts.most_common(10))


@pytest.mark.slow
def test_expand_contract_rollout_fails_no_request_and_contracts_once_after_the_last_a(
    database_url: str,
) -> None:
    """0 failed of 10,000+ requests; the restarted old replica serves; the contract part runs
    once, after the last A replica stopped; no lock left."""
    result = asyncio.run(rolling_deploy(database_url, "expand_contract"))

    assert len(result.samples) >= 10_000
    assert result.failures == [], _failures(result)
    for phase in ("steady", "expand", "rollout", "after"):
        assert result.figures(phase).requests > 0, phase
    # Every replica served, B's included, and the old replica restarted mid-rollout came back
    # against a database a newer release had migrated, and served again.
    served = Counter(each.replica for each in result.samples)
    assert {f"B{n}" for n in range(1, 5)} | {f"A{n}" for n in range(1, 5)} <= set(served)
    assert list(result.restarted) == ["A4-restarted"]
    assert (result.restarted["A4-restarted"] or 0) > 0
    # Each replica joined the rotation once deploy/'s readiness probe (--check) said ready,
    # the old ones included while the database was ahead of them.
    assert len(result.probes) == 9
    assert set(result.probes.values()) == {0}
    restarted_events = json_events(result.logs["A4-restarted"])
    future = [event for event in restarted_events if event["event"] == "future_migrations"]
    assert len(future) == 1
    # The Job started while A replicas were alive left the contract waiting; the one after
    # the last A stopped ran it; the one after that found nothing to do.
    assert [(job.phase, job.returncode) for job in result.jobs] == [
        ("rollout", ExitCode.CONTRACT_WAITING),
        ("contract", 0),
        ("after", 0),
    ], [job.stderr[-2000:] for job in result.jobs]
    # Whichever release wrote a row, its two columns agreed when the last A stopped.
    assert result.out_of_sync_rows == 0
    (contract,) = result.contracts
    assert contract["version"] == 2
    assert contract["forced"] is False
    assert contract["applied_at"] > result.last_a_stopped_at
    assert result.advisory_locks_while_serving == 0
    assert result.advisory_locks_after == 0
    # The schema is B's alone, and every write that was answered is there.
    columns = asyncio.run(
        fetch(database_url, "SELECT column_name FROM information_schema.columns "
              "WHERE table_name = 'items' ORDER BY column_name")
    )  # fmt: skip
    assert [row[0] for row in columns] == ["id", "name"]
    (count,) = asyncio.run(fetch(database_url, "SELECT count(*) FROM items"))
    assert count[0] == sum(each.kind == "insert" and not each.failure for each in result.samples)
    for name, log in result.logs.items():
        assert "Traceback" not in log, name
        assert PASSWORD not in log, name


@pytest.mark.slow
def test_the_same_rollout_with_a_one_step_rename_fails_the_old_replicas_requests(
    database_url: str,
) -> None:
    """The control: ``ALTER TABLE items RENAME COLUMN title TO name`` at B's start-up."""
    result = asyncio.run(
        rolling_deploy(database_url, "one_step", steady_s=2.0, dwell_s=0.5, min_requests=0)
    )

    assert result.failures
    # Only A replicas fail, only once B has migrated, each with a server error.
    assert {each.replica[0] for each in result.failures} == {"A"}
    assert result.figures("steady").failures == 0
    assert {each.failure.split(":")[0] for each in result.failures if each.failure} == {"HTTP 500"}
    assert result.contracts == []
    assert [job.returncode for job in result.jobs] == [0, 0, 0]  # nothing to contract
    # --check knows versions, not columns: the restarted A replica is "ready" and fails.
    assert result.probes["A4-restarted"] == 0
    assert result.restarted == {"A4-restarted": 0}
    assert result.out_of_sync_rows is None  # one column only, renamed
    assert result.advisory_locks_after == 0


def test_release_b_lints_clean_as_expand_and_contract_and_the_control_is_flagged(
    tmp_path: Path,
) -> None:
    """The deploy's SQL is README's rename recipe, which lint passes; the one-step rename is
    what lint flags in an expand part."""
    cases: list[tuple[Rename, int]] = [("expand_contract", 0), ("one_step", ExitCode.LINT_FINDINGS)]
    for rename, code in cases:
        folder = write_release(tmp_path / rename, "B", rename) / "migrations"
        done = run_cli("lint", "--all", "--migrations-dir", str(folder), database_url=None)
        assert done.returncode == code, done.stdout + done.stderr
        if code:
            assert "renaming-column" in done.stdout + done.stderr
