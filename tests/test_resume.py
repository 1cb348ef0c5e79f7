"""Resuming a no-transaction migration: every statement exactly once, whatever stopped the run.

A kill is simulated here by putting the ledger where a killed runner leaves it
(the statement's effect committed, its journal step not); the real kill -9
trials are in test_kill9.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from harness.servers.sql import execute as sql_execute
from harness.servers.sql import fetchval as sql_fetchval
from natlangchain_migrate import ConfigurationError, MigrationFailedError, migrate
from natlangchain_migrate.statements import split_statements
from tests.conftest import write_migrations

NO_TX = "-- natlangchain: no-transaction\n"

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("sql", "autocommit"),
    [
        ("CREATE TABLE t (id int)", False),
        ("ALTER TABLE t ADD COLUMN c int", False),
        ("CREATE INDEX i ON t (id)", False),
        ("CREATE INDEX CONCURRENTLY i ON t (id)", True),
        ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (id)", True),
        ("DROP INDEX i", False),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", True),
        ("REINDEX TABLE t", False),
        ("REINDEX INDEX CONCURRENTLY i", True),
        ("REINDEX SCHEMA s", True),
        ("VACUUM t", True),
        ("VACUUM (ANALYZE) t", True),
        ("ANALYZE t", False),
        ("CLUSTER", True),
        ("CLUSTER t USING i", False),
        ("CREATE DATABASE d", True),
        ("DROP DATABASE d", True),
        ("ALTER DATABASE d SET TABLESPACE x", True),
        ("ALTER DATABASE d SET work_mem = '1MB'", False),
        ("CREATE TABLESPACE x LOCATION '/x'", True),
        ("ALTER SYSTEM SET work_mem = '1MB'", True),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", True),
        ("ALTER TABLE p DETACH PARTITION c", False),
        ("DISCARD ALL", True),
        ("ALTER TYPE mood ADD VALUE 'meh'", False),
        ("UPDATE t SET id = id + 1", False),
        ("DO $$ BEGIN PERFORM 1; END $$", False),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$", False),
    ],
)
def test_which_statements_run_outside_a_transaction_block_is_read_from_the_parse_tree(
    sql: str, autocommit: bool
) -> None:
    (statement,) = split_statements("001_x.sql", sql + ";")
    assert statement.autocommit is autocommit


async def _as_if_killed_after(url: str, version: int, statements_done: int) -> None:
    """Leave the ledger as a runner killed after statement ``statements_done + 1``
    committed, before its journal step did."""
    await sql_execute(
        url,
        f"UPDATE schema_migrations SET complete = false, statements_done = {statements_done} "
        f"WHERE version = {version}",
    )


async def test_each_statement_commits_with_its_journal_step(
    database_url: str, tmp_path: Path
) -> None:
    """A statement that fails leaves nothing of itself, and the journal says how far it got."""
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_steps.sql": NO_TX + "CREATE TABLE a (id int);\n"
            "CREATE TABLE b (id int);\n"
            "INSERT INTO a VALUES (1), ('x');\n",
        },
    )
    with pytest.raises(MigrationFailedError) as failed:
        await migrate(database_url, migrations_dir=folder)
    assert failed.value.location == "001_steps.sql:4:28"
    done = await sql_fetchval(database_url, "SELECT statements_done FROM schema_migrations")
    assert done == 2
    assert await sql_fetchval(database_url, "SELECT count(*) FROM a") == 0


async def test_concurrent_index_built_before_a_kill_counts_as_done(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (v int);\n",
            "002_idx.sql": NO_TX + "CREATE INDEX CONCURRENTLY t_v ON t (v);\n"
            "CREATE TABLE after_index (id int);\n",
        },
    )
    await migrate(database_url, migrations_dir=folder)
    await sql_execute(database_url, "DROP TABLE after_index")
    await _as_if_killed_after(database_url, 2, 0)
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [2]
    assert [e["statement"] for e in events if e["event"] == "statement_already_applied"] == [1]
    indexes = "SELECT count(*) FROM pg_indexes WHERE tablename = 't'"
    assert await sql_fetchval(database_url, indexes) == 1
    assert await sql_fetchval(database_url, "SELECT to_regclass('after_index') IS NOT NULL")


async def test_concurrent_drop_done_before_a_kill_counts_as_done(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (v int); CREATE INDEX t_v ON t (v);\n",
            "002_drop.sql": NO_TX + "DROP INDEX CONCURRENTLY t_v;\nALTER TABLE t ADD w int;\n",
        },
    )
    await migrate(database_url, migrations_dir=folder)
    await sql_execute(database_url, "ALTER TABLE t DROP COLUMN w")
    await _as_if_killed_after(database_url, 2, 0)
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [2]
    indexes = "SELECT count(*) FROM pg_indexes WHERE tablename = 't'"
    assert await sql_fetchval(database_url, indexes) == 0
    column = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'w'"
    assert await sql_fetchval(database_url, column) == 1


async def test_a_resumed_statement_whose_effect_is_there_says_how_to_go_on(
    database_url: str, tmp_path: Path
) -> None:
    """Following the error's advice literally finishes the migration."""
    folder = write_migrations(
        tmp_path / "m",
        {"001_steps.sql": NO_TX + "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n"},
    )
    await migrate(database_url, migrations_dir=folder)
    await sql_execute(database_url, "DROP TABLE b")
    # A journal one step behind, as a runner older than the atomic journal could leave it.
    await _as_if_killed_after(database_url, 1, 0)
    with pytest.raises(MigrationFailedError) as stuck:
        await migrate(database_url, migrations_dir=folder)
    message = str(stuck.value)
    assert "Fix the file" not in message
    assert "was resuming at statement 1" in message
    advice = message[message.index("UPDATE ") : message.index("; and run again")]
    assert advice.endswith("SET statements_done = 1 WHERE version = 1")
    await sql_execute(database_url, advice)
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [1]
    assert await sql_fetchval(database_url, "SELECT to_regclass('b') IS NOT NULL")


@pytest.mark.parametrize("control", ["BEGIN;", "COMMIT;", "SAVEPOINT s;", "START TRANSACTION;"])
async def test_transaction_control_in_a_no_transaction_file_is_refused_before_anything_runs(
    database_url: str, tmp_path: Path, control: str
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"001_t.sql": NO_TX + f"CREATE TABLE a (id int);\n{control}\nCREATE TABLE b (id int);\n"},
    )
    with pytest.raises(ConfigurationError, match=r"^001_t\.sql:3: .*no-transaction file"):
        await migrate(database_url, migrations_dir=folder)
    assert await sql_fetchval(database_url, "SELECT to_regclass('a')") is None


@pytest.mark.system
def test_a_kill_during_the_first_statement_leaves_a_row_that_makes_the_rerun_check(
    database_url: str, tmp_path: Path
) -> None:
    """A no-transaction file whose first statement must run on its own gets its row first:
    killed there, the next run knows it is resuming and checks the index."""
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (v int);\n",
            "002_idx.sql": NO_TX + "CREATE INDEX CONCURRENTLY t_v ON t (v);\n"
            "CREATE TABLE after_index (id int);\n",
        },
    )

    async def scenario() -> None:
        blocker = await asyncpg.connect(database_url)
        await migrate(database_url, migrations_dir=folder, target=1)
        await blocker.execute("BEGIN; LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")
        env = os.environ | {"DATABASE_URL": database_url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
        runner = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "natlangchain_migrate",
            "--migrations-dir",
            str(folder),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 't'::regclass"
        deadline = time.monotonic() + 30
        while not await sql_fetchval(database_url, waiting):
            assert time.monotonic() < deadline, "the index build never waited for the lock"
            await asyncio.sleep(0.05)
        runner.send_signal(signal.SIGKILL)
        await runner.wait()
        row = "SELECT statements_done FROM schema_migrations WHERE version = 2 AND NOT complete"
        assert await sql_fetchval(database_url, row) == 0
        await blocker.execute("COMMIT")
        await blocker.close()
        # The killed session may still hold the migration lock until the server notices.
        report = await migrate(database_url, migrations_dir=folder)
        assert [r.version for r in report.applied] == [2]
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_v'::regclass"
        assert await sql_fetchval(database_url, valid) is True

    asyncio.run(scenario())
