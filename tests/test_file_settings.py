"""A file's ``SET LOCAL`` ends with the file, in either lock mode: under ``--lock-mode
transaction`` every pending file shares the lock's one transaction, and what one file set
for itself must not change how the files after it run."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from harness.servers.sql import execute as sql_execute
from harness.servers.sql import fetch as sql_fetch
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.local_settings import may_set
from tests.conftest import run_cli, write_migrations

# 001 changes, for itself, settings the runner sets and settings it does not.
SETS = (
    "CREATE SCHEMA other;\n"
    "SET LOCAL search_path = other;\n"
    "SET LOCAL lock_timeout = '1ms';\n"
    "SET LOCAL app.x = 'from 001';\n"
    "SET LOCAL work_mem = '77MB';\n"
    # Short, not 1ms: in session lock mode 001's ledger row runs under it too.
    "SET LOCAL statement_timeout = '100ms';\n"
)
COPY = "CREATE TABLE public.copied (n int);\nCOPY public.copied (n) FROM stdin;\n1\n2\n\\.\n"
# 002 records what it runs under, in a table made where its search_path says.
SEES = (
    "CREATE TABLE seen AS SELECT current_setting('search_path') AS search_path, "
    "current_setting('statement_timeout') AS statement_timeout, "
    "current_setting('lock_timeout') AS lock_timeout, "
    "current_setting('app.x', true) AS app_x, "
    "current_setting('work_mem') AS work_mem;\n"
    "SELECT pg_sleep(0.3);\n"  # longer than 001's statement_timeout
)
RUNNER = ("--statement-timeout", "30s", "--pg-lock-timeout", "7s")


def _seen(url: str) -> dict[str, object]:
    (row,) = asyncio.run(sql_fetch(url, "SELECT * FROM public.seen"))
    return dict(row)


@pytest.mark.parametrize("copy_data", [False, True], ids=["plain", "streamed"])
def test_a_files_set_local_ends_with_the_file_in_either_lock_mode(
    tmp_path: Path, database_url: str, copy_data: bool
) -> None:
    """Under --lock-mode transaction, 001's SET LOCAL reached 002: its search_path, a
    custom setting (app.x) and work_mem, and the runner's own timeouts for the ledger
    row after 001. Each file now runs as in session lock mode, one transaction each."""
    folder = write_migrations(
        tmp_path / "m", {"001_sets.sql": (COPY if copy_data else "") + SETS, "002_sees.sql": SEES}
    )
    seen: dict[str, dict[str, object]] = {}
    for lock_mode in ("session", "transaction"):
        result = run_cli(
            "--migrations-dir", str(folder), "--lock-mode", lock_mode, *RUNNER,
            database_url=database_url,
        )  # fmt: skip
        assert result.returncode == ExitCode.OK, result.stderr
        seen[lock_mode] = _seen(database_url)
        asyncio.run(
            sql_execute(
                database_url,
                "DROP SCHEMA other CASCADE; DROP TABLE public.seen; "
                "DROP TABLE IF EXISTS public.copied; DROP TABLE schema_migrations",
            )
        )
    assert seen["transaction"] == seen["session"]
    assert seen["transaction"]["statement_timeout"] == "30s"  # the runner's, not 001's
    assert seen["transaction"]["lock_timeout"] == "7s"
    assert seen["transaction"]["app_x"] in ("", None)
    assert seen["transaction"]["search_path"] != "other"


def test_a_down_files_set_local_ends_with_it_in_transaction_lock_mode(
    tmp_path: Path, database_url: str
) -> None:
    """--rollback --steps 2 under --lock-mode transaction: 003's down file sets app.x and
    work_mem for itself; 002's down file, after it in the lock's transaction, records
    what it runs under, which must be what it would run under alone."""
    files = {
        "001_base.sql": "CREATE TABLE base (id int);\n",
        "002_mid.sql": "CREATE TABLE mid (id int);\n",
        "002_mid.down.sql": "DROP TABLE mid;\n" + SEES,
        "003_top.sql": "CREATE TABLE top (id int);\n",
        "003_top.down.sql": "DROP TABLE top;\n" + SETS,
    }
    folder = write_migrations(tmp_path / "m", files)
    seen: dict[str, dict[str, object]] = {}
    for lock_mode in ("session", "transaction"):
        flags = ("--migrations-dir", str(folder), "--lock-mode", lock_mode, *RUNNER)
        assert run_cli(*flags, database_url=database_url).returncode == ExitCode.OK
        result = run_cli(*flags, "--rollback", "--steps", "2", database_url=database_url)
        assert result.returncode == ExitCode.OK, result.stderr
        seen[lock_mode] = _seen(database_url)
        asyncio.run(sql_execute(database_url, "DROP SCHEMA other CASCADE; DROP TABLE public.seen"))
    assert seen["transaction"] == seen["session"]
    assert seen["transaction"]["app_x"] in ("", None)
    assert seen["transaction"]["statement_timeout"] == "30s"


def test_a_files_set_local_role_ends_with_it_in_transaction_lock_mode(
    tmp_path: Path, database_url: str
) -> None:
    """001 sets a role of no privileges for itself; its ledger row and 002 run as the
    runner's role again (pg_settings does not list the role: it is noted on its own)."""
    role = f"nlc_{uuid.uuid4().hex[:10]}"
    files = {
        "001_role.sql": f"CREATE ROLE {role};\nSET LOCAL ROLE {role};\n",
        "002_who.sql": "CREATE TABLE who AS SELECT current_user::text AS name;\n",
    }
    folder = write_migrations(tmp_path / "m", files)
    flags = ("--migrations-dir", str(folder), "--lock-mode", "transaction")
    try:
        result = run_cli(*flags, database_url=database_url)
        assert result.returncode == ExitCode.OK, result.stderr
        who = asyncio.run(sql_fetch(database_url, "SELECT name, current_user AS me FROM who"))
        assert who[0]["name"] == who[0]["me"] != role
    finally:
        asyncio.run(sql_execute(database_url, f"DROP ROLE IF EXISTS {role}"))


@pytest.mark.parametrize(
    ("sql", "may"),
    [
        ("SET LOCAL search_path = other;", True),
        ("CREATE TABLE t (id int);\nset statement_timeout = '1ms';", True),
        ("SELECT 1; RESET work_mem;", True),
        ("SELECT pg_catalog.set_config('app.x', 'y', true);", True),
        ("DO $$ BEGIN EXECUTE 'SET LOCAL lock_timeout = 1'; END $$;", True),
        ("SET ROLE app;", True),
        ("DISCARD TEMP;", True),
        ("CREATE TABLE t (id int);\nCREATE INDEX t_id ON t (id);", False),
        ("UPDATE t SET id = 1;\nALTER TABLE t ALTER COLUMN id SET DEFAULT 0;", False),
    ],
)
def test_only_a_file_that_may_set_something_pays_for_the_restore(sql: str, may: bool) -> None:
    """The note and the restore read pg_settings twice (about 1 ms each per file): a file
    that sets nothing skips them."""
    assert may_set(sql) is may
