"""Migrations that run outside a transaction: journalled statement by statement, resumable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import (
    ConfigurationError,
    MigrationFailedError,
    migrate,
    run_migrations,
)
from natlangchain_migrate.errors import ExitCode
from tests.conftest import fetchval, ledger_rows, run_cli, write_migrations

NO_TX = "-- natlangchain: no-transaction\n"


def _value(url: str, sql: str) -> object:
    return asyncio.run(fetchval(url, sql))


@pytest.mark.anyio
async def test_statements_split_by_postgres_grammar_survive_dollar_quotes_and_comments(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (id int, note text);\n",
            "002_idx.sql": NO_TX + "/* a comment; with a semicolon */\n"
            "INSERT INTO t VALUES (1, 'a;b');\n"
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN RETURN 1; END;\n$$;\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id); -- trailing; comment\n",
        },
    )
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [1, 2]
    assert await fetchval(database_url, "SELECT note FROM t") == "a;b"
    assert await fetchval(database_url, "SELECT f()") == 1
    assert await fetchval(
        database_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id'::regclass"
    )
    rows = await ledger_rows(database_url)
    assert [(r["version"], r["complete"]) for r in rows] == [(1, True), (2, True)]


@pytest.mark.anyio
async def test_failed_statement_leaves_incomplete_row_and_next_run_resumes_there(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE counter (n int);\n",
            "002_steps.sql": NO_TX + "INSERT INTO counter VALUES (1);\n"
            "INSERT INTO counter VALUES (2);\n"
            "INSERT INTO nowhere VALUES (3);\n"
            "INSERT INTO counter VALUES (4);\n",
        },
    )
    with capture_logs() as events, pytest.raises(MigrationFailedError) as failed:
        await migrate(database_url, migrations_dir=folder)
    logged = next(e for e in events if e["event"] == "migration_failed")
    assert logged["file"] == failed.value.location == "002_steps.sql:4:13"
    assert "next run resumes at statement 3" in str(failed.value)
    row = (await ledger_rows(database_url))[1]
    assert (row["complete"], row["statements_done"]) == (False, 2)
    assert "nowhere" in row["last_error"]
    # What an operator sees: the CLI's status line and --check's exit code.
    status = run_cli("--status", "--migrations-dir", str(folder), database_url=database_url)
    assert "✗ 002_steps: FAILED (at statement 3)" in status.stdout
    check = run_cli("--check", "--migrations-dir", str(folder), database_url=database_url)
    assert check.returncode == ExitCode.CHECK_FAILED

    fixed = (folder / "002_steps.sql").read_text().replace("nowhere", "counter")
    (folder / "002_steps.sql").write_text(fixed)
    with capture_logs() as events:
        await migrate(database_url, migrations_dir=folder)
    resumed = next(e for e in events if e["event"] == "migration_resuming")
    assert resumed["statement"] == 3
    edited = next(e for e in events if e["event"] == "resuming_edited_migration")
    assert edited["statements_already_run"] == 2
    counted = "SELECT array_agg(n ORDER BY n)::text FROM counter"
    assert await fetchval(database_url, counted) == "{1,2,3,4}"
    assert (await ledger_rows(database_url))[1]["complete"] is True


@pytest.mark.system
@pytest.mark.slow
def test_runner_killed_between_statements_resumes_at_the_right_statement(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE counter (n int); CREATE TABLE pause (seconds float);"
            " INSERT INTO pause VALUES (60);\n",
            "002_steps.sql": NO_TX + "INSERT INTO counter VALUES (1);\n"
            "SELECT pg_sleep((SELECT seconds FROM pause));\n"
            "INSERT INTO counter VALUES (3);\n",
        },
    )
    env = os.environ | {"DATABASE_URL": database_url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = (
            _value(
                database_url,
                "SELECT statements_done FROM schema_migrations WHERE version = 2 AND NOT complete",
            )
            if _value(database_url, "SELECT to_regclass('schema_migrations')")
            else None
        )
        if done == 1:
            break
        time.sleep(0.05)
    else:
        runner.kill()
        pytest.fail("the runner never journalled statement 1")
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    # An operator's view after the crash: FAILED at statement 2.
    status = run_cli("--status", "--migrations-dir", str(folder), database_url=database_url)
    assert "✗ 002_steps: FAILED (at statement 2)" in status.stdout
    asyncio.run(fetchval(database_url, "UPDATE pause SET seconds = 0"))
    run_migrations(database_url, migrations_dir=folder, lock_timeout=60)
    assert _value(database_url, "SELECT array_agg(n ORDER BY n)::text FROM counter") == "{1,3}"


@pytest.mark.anyio
async def test_invalid_index_from_failed_concurrent_build_is_dropped_before_retry(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (1), (2);\n",
            "002_unique.sql": NO_TX
            + "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_v ON t (v);\n",
        },
    )
    with pytest.raises(MigrationFailedError):
        await migrate(database_url, migrations_dir=folder)
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_v'::regclass"
    assert await fetchval(database_url, valid) is False
    duplicate = "DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t WHERE v = 1)"
    await fetchval(database_url, duplicate)
    with capture_logs() as events:
        await migrate(database_url, migrations_dir=folder)
    dropped = [e for e in events if e["event"] == "invalid_index_dropped"]
    assert [e["index"] for e in dropped] == ["public.t_v"]
    assert await fetchval(database_url, valid) is True


@pytest.mark.anyio
@pytest.mark.slow
async def test_long_index_build_reports_progress(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v "
            "FROM generate_series(1, 1500000) g;\n",
            "002_idx.sql": NO_TX + "CREATE INDEX CONCURRENTLY big_v ON big (v, id);\n",
        },
    )
    with capture_logs() as events:
        await migrate(database_url, migrations_dir=folder, progress_interval=0.2)
    progress = [e for e in events if e["event"] == "index_build_progress"]
    assert progress, "no progress event during the index build"
    assert all(e["index"] == "big_v" and e["phase"] for e in progress)
    assert any(e["blocks_total"] or e["tuples_total"] for e in progress)


@pytest.mark.anyio
async def test_no_transaction_file_is_refused_in_transaction_lock_mode(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_i.sql": NO_TX + "SELECT 1;\n"})
    with pytest.raises(ConfigurationError, match=r"001_i\.sql runs without a transaction"):
        await migrate(database_url, migrations_dir=folder, lock_mode="transaction")
