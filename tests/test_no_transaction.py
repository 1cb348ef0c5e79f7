"""Migrations that run outside a transaction: journalled statement by statement, resumable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import ConfigurationError, migrate
from natlangchain_migrate.errors import ExitCode
from tests.conftest import ledger_rows, log_events, run_cli, write_migrations

NO_TX = "-- natlangchain: no-transaction\n"


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _value(url: str, sql: str) -> object:
    return asyncio.run(_fetchval(url, sql))


def test_statements_split_by_postgres_grammar_survive_dollar_quotes_and_comments(
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
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert _value(database_url, "SELECT note FROM t") == "a;b"
    assert _value(database_url, "SELECT f()") == 1
    assert _value(
        database_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id'::regclass"
    )
    rows = asyncio.run(ledger_rows(database_url))
    assert [(r["version"], r["complete"]) for r in rows] == [(1, True), (2, True)]


def test_failed_statement_leaves_incomplete_row_and_next_run_resumes_there(
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
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED
    failed = next(e for e in log_events(result.stderr) if e["event"] == "migration_failed")
    assert failed["file"] == "002_steps.sql:4:13"
    assert "next run resumes at statement 3" in failed["error"]
    row = asyncio.run(ledger_rows(database_url))[1]
    assert (row["complete"], row["statements_done"]) == (False, 2)
    assert "nowhere" in row["last_error"]
    status = run_cli("--status", "--migrations-dir", str(folder), database_url=database_url)
    assert "✗ 002_steps: FAILED (at statement 3)" in status.stdout
    check = run_cli("--check", "--migrations-dir", str(folder), database_url=database_url)
    assert check.returncode == ExitCode.CHECK_FAILED

    fixed = (folder / "002_steps.sql").read_text().replace("nowhere", "counter")
    (folder / "002_steps.sql").write_text(fixed)
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    resumed = next(e for e in log_events(result.stderr) if e["event"] == "migration_resuming")
    assert resumed["statement"] == 3
    edited = next(e for e in log_events(result.stderr) if e["event"] == "resuming_edited_migration")
    assert edited["statements_already_run"] == 2
    assert _value(database_url, "SELECT array_agg(n ORDER BY n)::text FROM counter") == "{1,2,3,4}"
    assert asyncio.run(ledger_rows(database_url))[1]["complete"] is True


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
    asyncio.run(_fetchval(database_url, "UPDATE pause SET seconds = 0"))
    result = run_cli(
        "--migrations-dir", str(folder), "--lock-timeout", "60", database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert _value(database_url, "SELECT array_agg(n ORDER BY n)::text FROM counter") == "{1,3}"


def test_invalid_index_from_failed_concurrent_build_is_dropped_before_retry(
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
    first = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert first.returncode == ExitCode.MIGRATION_FAILED
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_v'::regclass"
    assert _value(database_url, valid) is False
    asyncio.run(
        _fetchval(database_url, "DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t WHERE v = 1)")
    )
    second = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert second.returncode == 0, second.stderr
    dropped = [e for e in log_events(second.stderr) if e["event"] == "invalid_index_dropped"]
    assert [e["index"] for e in dropped] == ["public.t_v"]
    assert _value(database_url, valid) is True


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
