"""No input makes the runner wait forever: what only psql can run is refused before
anything runs, and every wait is bounded by a setting and says what it waits for."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import (
    ConfigurationError,
    DatabaseUnreachableError,
    migrate,
    rollback,
)
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, run_cli, table_names, write_migrations

NO_TX = "-- natlangchain: no-transaction\n"
COPY_LAST = "CREATE TABLE t (id int);\nCOPY t (id) FROM stdin;\n"
DUMP_SECTION = "CREATE TABLE t (id int);\nCOPY public.t (id) FROM stdin;\n1\n2\n\\.\n"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("head", "body"),
    [("", COPY_LAST), (NO_TX, COPY_LAST), (NO_TX, DUMP_SECTION)],
    ids=["transaction-no-data", "no-transaction-no-data", "no-transaction-pg_dump-data"],
)
async def test_copy_from_stdin_is_refused_before_anything_runs(
    database_url: str, tmp_path: Path, head: str, body: str
) -> None:
    folder = write_migrations(
        tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n", "002_copy.sql": head + body}
    )
    with pytest.raises(ConfigurationError) as caught:
        await migrate(database_url, migrations_dir=folder)
    line = 3 if head else 2
    assert str(caught.value).startswith(f"002_copy.sql:{line}: COPY ... FROM STDIN")
    assert "end with a line holding only \\." in str(caught.value)
    assert await table_names(database_url) == set()  # not even 001 ran, no ledger


@pytest.mark.anyio
async def test_a_pg_dump_data_section_in_a_transactional_file_runs(
    database_url: str, tmp_path: Path
) -> None:
    """Its rows follow it and end with \\.: sent over the COPY protocol (data branch)."""
    folder = write_migrations(tmp_path / "m", {"002_copy.sql": DUMP_SECTION})
    await migrate(database_url, migrations_dir=folder)
    assert await table_names(database_url) == {"t", "schema_migrations"}


def test_the_cli_refuses_copy_from_stdin_with_exit_2(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"001_copy.sql": COPY_LAST})
    result = run_cli(
        "--migrations-dir",
        str(folder),
        "--statement-timeout",
        "1s",
        database_url=database_url,
        timeout=60,
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert "001_copy.sql:2" in failed[0]["error"]
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_a_down_file_with_copy_from_stdin_is_refused_before_anything_runs(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "001_a.down.sql": "DROP TABLE a;\n",
            "002_b.sql": "CREATE TABLE b (id int);\n",
            "002_b.down.sql": "DROP TABLE b;\nCOPY b (id) FROM stdin;\n",
        },
    )
    await migrate(database_url, migrations_dir=folder)
    with pytest.raises(ConfigurationError, match=r"002_b\.down\.sql:2: COPY"):
        await rollback(database_url, migrations_dir=folder, to=0)
    assert await table_names(database_url) == {"a", "b", "schema_migrations"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("\\set ON_ERROR_STOP on\nCREATE TABLE a (id int);\n", "\\set"),
        ("CREATE TABLE a (id int);\n\\i other.sql\n", "\\i"),
        ("\\restrict AbCdEf123\nCREATE TABLE a (id int);\n\\unrestrict AbCdEf123\n", "\\restrict"),
        ("\\connect other\nCREATE TABLE a (id int);\n", "\\connect"),
    ],
)
async def test_psql_meta_commands_are_named_as_such(
    database_url: str, tmp_path: Path, text: str, command: str
) -> None:
    for head in ("", NO_TX):
        folder = write_migrations(tmp_path / f"m{len(head)}", {"001_psql.sql": head + text})
        with pytest.raises(ConfigurationError) as caught:
            await migrate(database_url, migrations_dir=folder)
        message = str(caught.value)
        assert f"{command} is a psql meta-command" in message
        assert message.startswith("001_psql.sql:")
        assert await table_names(database_url) == set()


@pytest.mark.anyio
async def test_a_backslash_inside_a_string_is_sql_not_a_meta_command(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"001_a.sql": "CREATE TABLE a (t text DEFAULT E'x\n\\set y');\nCOPY a TO STDOUT;\n"},
    )
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [1]


@pytest.mark.anyio
async def test_a_pool_whose_connections_the_app_holds_is_waited_for_within_the_lock_wait(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        held = await pool.acquire()
        try:
            with capture_logs() as events, pytest.raises(DatabaseUnreachableError) as caught:
                await migrate(pool=pool, migrations_dir=folder, lock_timeout=1.5)
        finally:
            await pool.release(held)
        assert "no connection of the pool came free in 1.5s" in str(caught.value)
        waiting = [e for e in events if e["event"] == "pool_waiting"]
        assert waiting
        assert waiting[0]["max_size"] == 1
        # Once the app gives one back, the same call works.
        report = await migrate(pool=pool, migrations_dir=folder, lock_timeout=1.5)
        assert [r.version for r in report.applied] == [1]
    finally:
        await pool.close()
