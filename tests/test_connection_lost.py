"""A connection lost mid-migration is not the file's fault: exit 3 saying so, and with
--wait the run reconnects, takes the lock again and finishes, each migration once."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers.pgcluster import PgCluster, embedded_bindir
from harness.servers.sql import fetch as sql_fetch
from natlangchain_migrate.errors import ExitCode
from tests.conftest import (
    ledger_rows,
    log_events,
    migration_locks_held,
    start_cli,
    write_migrations,
)

pytestmark = pytest.mark.system  # README: "Running the tests"

NO_TX = "-- natlangchain: no-transaction\n"
SLEEPING = (
    "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' "
    "AND pid <> pg_backend_pid() AND state = 'active'"
)


def _files(no_transaction: bool) -> dict[str, str]:
    """002 sleeps while ``pause`` says so: the first run is cut off there, a rerun is not."""
    header = NO_TX if no_transaction else ""
    return {
        "001_pause.sql": "CREATE TABLE pause (seconds float); INSERT INTO pause VALUES (30);\n",
        "002_slow.sql": header + "CREATE TABLE slow (id int);\n"
        "SELECT pg_sleep(seconds) FROM pause;\n"
        "UPDATE pause SET seconds = 0;\n",
        "003_after.sql": "CREATE TABLE after_slow (id int);\n",
    }


def _start(folder: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return start_cli("--migrations-dir", str(folder), *extra, database_url=url)


def _sleeping_pids(url: str, runner: subprocess.Popen[str]) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [row["pid"] for row in asyncio.run(sql_fetch(url, SLEEPING))]
        if pids:
            return pids
        assert runner.poll() is None, runner.communicate()
        time.sleep(0.05)
    pytest.fail("the migration never started its sleep")


def _terminate(url: str, pids: list[int]) -> None:
    asyncio.run(sql_fetch(url, f"SELECT pg_terminate_backend(pid) FROM unnest(ARRAY{pids}) pid"))


def _end_state(url: str) -> list[tuple[int, bool]]:
    return [(row["version"], row["complete"]) for row in asyncio.run(ledger_rows(url))]


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transactional", "no-transaction"])
def test_terminated_backend_is_reported_as_a_lost_connection_not_a_bad_file(
    database_url: str, tmp_path: Path, no_transaction: bool
) -> None:
    folder = write_migrations(tmp_path / "m", _files(no_transaction))
    runner = _start(folder, database_url)
    _terminate(database_url, _sleeping_pids(database_url, runner))
    _, stderr = runner.communicate(timeout=30)
    assert runner.returncode == ExitCode.UNREACHABLE, stderr
    failed = next(e for e in log_events(stderr) if e["event"] == "run_failed")
    assert failed["error_type"] == "ConnectionLostError"
    assert "connection to the server was lost while 002_slow.sql ran" in failed["error"]
    assert "Fix the file" not in stderr
    assert "Traceback" not in stderr
    assert not [e for e in log_events(stderr) if e["event"] == "migration_failed"]
    if no_transaction:
        assert "the next run resumes after them" in failed["error"]
        assert _end_state(database_url) == [(1, True), (2, False)]
    else:
        assert "rolled 002_slow back and it was not recorded" in failed["error"]
        assert _end_state(database_url) == [(1, True)]
    asyncio.run(sql_fetch(database_url, "UPDATE pause SET seconds = 0"))
    rerun = _start(folder, database_url)
    _, stderr = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, stderr
    assert _end_state(database_url) == [(1, True), (2, True), (3, True)]


def test_with_wait_a_terminated_backend_is_survived(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", _files(no_transaction=False))
    runner = _start(folder, database_url, "--wait", "30")
    pids = _sleeping_pids(database_url, runner)
    asyncio.run(sql_fetch(database_url, "UPDATE pause SET seconds = 0"))
    _terminate(database_url, pids)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 0, stderr
    events = [e["event"] for e in log_events(stderr)]
    assert "connection_lost_reconnecting" in events
    assert _end_state(database_url) == [(1, True), (2, True), (3, True)]
    assert asyncio.run(migration_locks_held(database_url)) == 0


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A server of the test's own, to restart under a running migration."""
    cluster = PgCluster(embedded_bindir(), name="restart").init().start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.slow
def test_with_wait_a_server_restart_mid_run_is_survived(
    own_cluster: PgCluster, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", _files(no_transaction=True))
    url = own_cluster.dsn()
    runner = _start(folder, url, "--wait", "60")
    _sleeping_pids(url, runner)
    fast_stop = [own_cluster.bin("pg_ctl"), "-D", str(own_cluster.data), "-m", "fast", "-w", "stop"]
    subprocess.run(fast_stop, check=True, capture_output=True, user=own_cluster.user)
    time.sleep(2)  # refused connections for a while, as during a failover
    own_cluster.start()
    asyncio.run(sql_fetch(url, "UPDATE pause SET seconds = 0"))
    _, stderr = runner.communicate(timeout=90)
    assert runner.returncode == 0, stderr
    events = [e["event"] for e in log_events(stderr)]
    assert "connection_lost_reconnecting" in events
    assert "database_waiting" in events
    assert _end_state(url) == [(1, True), (2, True), (3, True)]
    assert asyncio.run(sql_fetch(url, "SELECT count(*) FROM slow"))[0][0] == 0
