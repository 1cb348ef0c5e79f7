"""Many replicas starting at once: real OS processes racing for one fresh database."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from tests.conftest import ledger_rows, log_events, migration_locks_held, start_cli

pytestmark = pytest.mark.system  # README: "Running the tests"

RUNNERS = 16


def _start_runners(database_url: str, count: int, *extra: str) -> list[subprocess.Popen[str]]:
    return [start_cli(*extra, database_url=database_url) for _ in range(count)]


@pytest.mark.slow
def test_sixteen_concurrent_processes_apply_each_migration_exactly_once(database_url: str) -> None:
    runners = _start_runners(database_url, RUNNERS)
    outputs = [runner.communicate(timeout=180) for runner in runners]
    codes = [runner.returncode for runner in runners]
    assert codes == [0] * RUNNERS, [err for _, err in outputs if "error" in err][:1]
    events = [event for _, err in outputs for event in log_events(err)]
    applied = [event["version"] for event in events if event["event"] == "migration_applied"]
    assert sorted(applied) == [1, 2, 3]
    rows = asyncio.run(ledger_rows(database_url))
    assert [row["version"] for row in rows] == [1, 2, 3]
    assert asyncio.run(migration_locks_held(database_url)) == 0
