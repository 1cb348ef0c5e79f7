"""Down files run under the same execution settings as up files: PostgreSQL's lock_timeout
with retries, statement_timeout, and the progress watcher, on every rollback path
(transactional, no-transaction, ``to=``, ``steps=``); and the advice for a migration that
keeps hitting lock_timeout names the flag that sets it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import (
    LockRetriesExhaustedError,
    ServerSettingError,
    migrate,
    rollback,
)
from natlangchain_migrate.errors import ExitCode
from tests.conftest import ledger_rows, log_events, run_cli, tables_but_the_ledger, write_migrations

NO_TX = "-- natlangchain: no-transaction\n"


def _files(down_c: str, *, no_transaction: bool = False) -> dict[str, str]:
    header = NO_TX if no_transaction else ""
    return {
        "001_a.sql": "CREATE TABLE a (id int);\n",
        "001_a.down.sql": "DROP TABLE a;\n",
        "002_c.sql": "CREATE TABLE c (id int);\n",
        "002_c.down.sql": header + down_c,
        "003_d.sql": "CREATE TABLE d (id int);\n",
        "003_d.down.sql": "DROP TABLE d;\n",
    }


# Each rollback path, as (name, no-transaction down file?, rollback keywords). Every one
# of them reaches 002_c.down.sql; the --steps and --to paths undo 003 first.
PATHS: list[tuple[str, bool, dict[str, Any]]] = [
    ("transactional", False, {"steps": 2}),
    ("no-transaction", True, {"steps": 2}),
    ("to", False, {"to": 1}),
    ("steps", False, {"steps": 2}),
    ("no-transaction-to", True, {"to": 1}),
    ("transaction-lock-mode", False, {"steps": 2, "lock_mode": "transaction"}),
]


def _kept(how_far: dict[str, Any]) -> list[int]:
    """The ledger's versions after 002's down file failed on a path that undid 003 first."""
    return [1, 2, 3] if how_far.get("lock_mode") == "transaction" else [1, 2]


async def _blocker(url: str) -> asyncpg.Connection:
    """A session holding ACCESS SHARE on c in an open transaction: DROP TABLE c waits."""
    conn = await asyncpg.connect(url)
    await conn.execute("SET application_name = 'slow-report'")
    await conn.execute("BEGIN; LOCK TABLE c IN ACCESS SHARE MODE")
    return conn


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "no_transaction", "how_far"), PATHS, ids=[p[0] for p in PATHS])
async def test_a_blocked_down_file_hits_pg_lock_timeout_and_is_retried(
    database_url: str, tmp_path: Path, path: str, no_transaction: bool, how_far: dict[str, Any]
) -> None:
    folder = write_migrations(
        tmp_path / "m", _files("DROP TABLE c;\n", no_transaction=no_transaction)
    )
    await migrate(database_url, migrations_dir=folder)
    blocker = await _blocker(database_url)
    try:
        with capture_logs() as events, pytest.raises(LockRetriesExhaustedError) as caught:
            await rollback(
                database_url,
                migrations_dir=folder,
                pg_lock_timeout="500ms",  # the watcher looks for blockers at 250 ms
                lock_retries=1,
                retry_delay=0.01,
                **how_far,
            )
    finally:
        await blocker.close()
    assert caught.value.location == "002_c.down.sql"
    assert "--pg-lock-timeout" in str(caught.value)
    retried = [e for e in events if e["event"] == "migration_lock_timeout"]
    assert [(e["version"], e["attempt"], e["of"]) for e in retried] == [(2, 1, 2)]
    assert retried[0]["blockers"][0]["application_name"] == "slow-report"
    # Nothing of 002's rollback was kept: its table and its row are there (in transaction
    # lock mode the whole rollback is one transaction: 003's row too).
    assert "c" in await tables_but_the_ledger(database_url)
    assert [r["version"] for r in await ledger_rows(database_url)] == _kept(how_far)


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "no_transaction", "how_far"), PATHS, ids=[p[0] for p in PATHS])
async def test_a_down_file_runs_under_statement_timeout_with_a_heartbeat(
    database_url: str, tmp_path: Path, path: str, no_transaction: bool, how_far: dict[str, Any]
) -> None:
    slow = "SELECT pg_sleep(0.4);\nDROP TABLE c;\n"
    folder = write_migrations(tmp_path / "m", _files(slow, no_transaction=no_transaction))
    await migrate(database_url, migrations_dir=folder)
    conn = await asyncpg.connect(database_url)
    try:  # the database's own statement_timeout, as a role's or a database's setting gives
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '150ms'")
    finally:
        await conn.close()
    # The run's statement_timeout overrides it, as it does for up files...
    with capture_logs() as events:
        undone = await rollback(
            database_url,
            migrations_dir=folder,
            statement_timeout="10s",
            progress_interval=0.1,
            **how_far,
        )
    assert [u.version for u in undone] == [3, 2]
    assert await tables_but_the_ledger(database_url) == ["a"]
    running = [e for e in events if e["event"] == "migration_running"]
    assert running
    assert {e["version"] for e in running} == {2}
    # ... and one of its own stops a down file that runs longer.
    await migrate(database_url, migrations_dir=folder)
    with pytest.raises(ServerSettingError) as caught:  # the run's setting, not the file
        await rollback(database_url, migrations_dir=folder, statement_timeout="100ms", **how_far)
    assert caught.value.sqlstate == "57014"
    assert (caught.value.location or "").startswith("002_c.down.sql")
    assert [r["version"] for r in await ledger_rows(database_url)] == _kept(how_far)


@pytest.mark.anyio
async def test_without_a_statement_timeout_a_down_file_is_not_bound_by_the_databases(
    database_url: str, tmp_path: Path
) -> None:
    """Up files run with statement_timeout 0 unless one is set; so do down files."""
    folder = write_migrations(tmp_path / "m", _files("SELECT pg_sleep(0.3);\nDROP TABLE c;\n"))
    await migrate(database_url, migrations_dir=folder)
    conn = await asyncpg.connect(database_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '100ms'")
    finally:
        await conn.close()
    undone = await rollback(database_url, migrations_dir=folder, steps=2)
    assert [u.version for u in undone] == [3, 2]


def test_the_cli_rollback_honours_pg_lock_timeout_and_lock_retries(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", _files("DROP TABLE c;\n"))
    assert run_cli("--migrations-dir", str(folder), database_url=database_url).returncode == 0
    with _blocking_process(database_url):
        result = run_cli(
            "--rollback",
            "--to",
            "1",
            "--pg-lock-timeout",
            "100ms",
            "--lock-retries",
            "0",
            "--migrations-dir",
            str(folder),
            database_url=database_url,
        )
    assert result.returncode == ExitCode.LOCK_RETRIES_EXHAUSTED, result.stderr
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert "002_c.down.sql" in failed[0]["error"]
    assert "--pg-lock-timeout" in failed[0]["error"]


def test_the_cli_rollback_honours_statement_timeout(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", _files("SELECT pg_sleep(0.4);\nDROP TABLE c;\n"))
    assert run_cli("--migrations-dir", str(folder), database_url=database_url).returncode == 0
    args = ("--rollback", "--to", "1", "--migrations-dir", str(folder))
    result = run_cli(*args, "--statement-timeout", "100ms", database_url=database_url)
    assert result.returncode == ExitCode.SERVER_SETTING, result.stderr
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert "57014" in failed[0]["error"]


@pytest.mark.anyio
async def test_the_up_path_advice_names_pg_lock_timeout(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path / "m", {"001_c.sql": "CREATE TABLE c (id int);\n", "002_x.sql": "DROP TABLE c;\n"}
    )
    await migrate(database_url, migrations_dir=folder, target=1)
    blocker = await _blocker(database_url)
    try:
        with pytest.raises(LockRetriesExhaustedError) as caught:
            await migrate(
                database_url, migrations_dir=folder, pg_lock_timeout="100ms", lock_retries=0
            )
    finally:
        await blocker.close()
    message = str(caught.value)
    assert "--pg-lock-timeout" in message
    assert "--lock-timeout" not in message.replace("--pg-lock-timeout", "")


@contextmanager
def _blocking_process(url: str) -> Iterator[None]:
    """For a CLI test: another process whose session holds ACCESS SHARE on c until the
    block ends."""
    script = (
        "import asyncio, asyncpg, sys\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    await conn.execute(\"SET application_name = 'slow-report'\")\n"
        "    await conn.execute('BEGIN; LOCK TABLE c IN ACCESS SHARE MODE')\n"
        "    print('locked', flush=True)\n"
        "    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)\n"
        "asyncio.run(main())\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        yield
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
