"""The advisory lock, in process: taken only when there is work, given up when another
runner has done it. (Racing OS processes are in test_concurrency.)"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.testing import capture_logs

from natlangchain_migrate import MigrationReport, migrate
from natlangchain_migrate.locks import default_namespace, lock_key

pytestmark = pytest.mark.anyio


async def _hold_migration_lock(url: str) -> asyncpg.Connection:
    """A session holding the default migration lock, as another runner would."""
    holder = await asyncpg.connect(url)
    await holder.execute("SELECT pg_advisory_lock($1)", lock_key(default_namespace("public")))
    return holder


async def test_up_to_date_run_never_waits_for_a_held_lock(migrated_database_url: str) -> None:
    """Nothing pending: the run ends after its one query, whoever holds the lock."""
    holder = await _hold_migration_lock(migrated_database_url)
    try:
        with capture_logs() as events:
            report = await migrate(migrated_database_url, lock_timeout=30)
    finally:
        await holder.close()
    assert report.up_to_date
    assert [e["event"] for e in events][-1] == "up_to_date"


async def test_waiting_runner_leaves_once_another_has_applied_everything(
    database_url: str,
) -> None:
    """It never needs the lock once the ledger shows the work done by someone else."""

    async def run_as(runner: str, **options: Any) -> MigrationReport:
        with bound_contextvars(runner=runner):
            return await migrate(database_url, **options)

    holder = await _hold_migration_lock(database_url)
    try:
        # Both runners log to the same capture; each event carries its runner's name.
        with capture_logs(processors=[merge_contextvars]) as events:
            waiting = asyncio.create_task(run_as("waiting", lock_timeout=60))
            await asyncio.sleep(0.5)  # the waiter is polling for the lock by then
            await run_as("other", lock_namespace="another-runner")
            report = await waiting
    finally:
        await holder.close()
    waiter = [e["event"] for e in events if e.get("runner") == "waiting"]
    assert "applied_by_another_runner" in waiter
    assert "lock_acquired" not in waiter
    assert "migration_applied" not in waiter
    assert report.applied == []
