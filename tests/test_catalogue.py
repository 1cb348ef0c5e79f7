"""The catalogue: what users bring, wrong in every way we know, one row each.

Every row runs the CLI as a user would and checks the same promises: the exit
code of its class; one clear line (a ``run_failed`` event, or argparse's usage
error) that names the file, flag or setting and what to do; nothing applied or
half-applied beyond what the row expects; no traceback; no password. Signals,
lost connections, privileges and standbys have their own modules (they need
processes in flight or other roles and servers); kill -9 is in test_kill9.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import asyncpg
import pytest

from harness.servers.pgcluster import PASSWORD
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.errors import ExitCode
from tests.conftest import run_cli

NO_TX = "-- natlangchain: no-transaction\n"
OK_001: dict[str, str | bytes] = {"001_a.sql": "CREATE TABLE a (id int);\n"}


class Case(NamedTuple):
    """One bad input: the files, the arguments, the environment, what must come out."""

    files: Mapping[str, str | bytes]
    args: tuple[str, ...]
    exit_code: ExitCode
    says: str
    env: tuple[tuple[str, str], ...] = ()
    dsn: str | None = None  # None: the test's database; "{port}" and "{db}" are filled in
    applied: tuple[int, ...] = ()


CASES: dict[str, Case] = {
    # --- database settings (DSNs) ---
    "dsn-not-a-url": Case(OK_001, (), ExitCode.USAGE, "neither a postgresql:// URL", dsn="x"),
    "dsn-unknown-scheme": Case(
        OK_001, (), ExitCode.USAGE, "neither a postgresql:// URL", dsn="mysql://u@h/db"
    ),
    "dsn-unclosed-quote": Case(
        OK_001, (), ExitCode.USAGE, "never closed", dsn="host=127.0.0.1 password='abc"
    ),
    "dsn-refused": Case(
        OK_001,
        (),
        ExitCode.UNREACHABLE,
        "is the server running",
        dsn="postgresql://postgres:" + PASSWORD + "@127.0.0.1:1/{db}",
    ),
    "dsn-unresolvable": Case(
        OK_001,
        (),
        ExitCode.UNREACHABLE,
        "could not connect",
        dsn="postgresql://postgres:" + PASSWORD + "@no-such-host.invalid:5432/{db}",
    ),
    "dsn-wrong-password": Case(
        OK_001,
        (),
        ExitCode.CONNECTION_REJECTED,
        "check the user, password",
        dsn="postgresql://postgres:Wr0ngPass@127.0.0.1:{port}/{db}",
    ),
    "dsn-unknown-database": Case(
        OK_001,
        (),
        ExitCode.CONNECTION_REJECTED,
        "check the user, password and database name",
        dsn="postgresql://postgres:" + PASSWORD + "@127.0.0.1:{port}/no_such_db",
    ),
    "dsn-unknown-role": Case(
        OK_001,
        (),
        ExitCode.CONNECTION_REJECTED,
        "refused the connection",
        dsn="postgresql://nobody:Wr0ngPass@127.0.0.1:{port}/{db}",
    ),
    "dsn-key-value-wrong-password": Case(
        OK_001,
        (),
        ExitCode.CONNECTION_REJECTED,
        "refused the connection",
        dsn="host=127.0.0.1 port={port} dbname={db} user=postgres password=Wr0ngPass",
    ),
    "dsn-query-password-wrong": Case(
        OK_001,
        (),
        ExitCode.CONNECTION_REJECTED,
        "refused the connection",
        dsn="postgresql://postgres@127.0.0.1:{port}/{db}?password=Wr0ngPass",
    ),
    "dsn-empty": Case(OK_001, (), ExitCode.USAGE, "set but empty", dsn=""),
    # --- files and names ---
    "file-misnamed": Case({"add_users.sql": "SELECT 1;"}, (), ExitCode.USAGE, "add_users.sql:"),
    "file-uppercase-suffix": Case(
        {"001_a.SQL": "SELECT 1;"}, (), ExitCode.USAGE, "rename it to 001_a.sql"
    ),
    "file-two-with-one-version": Case(
        {"001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 1;"},
        (),
        ExitCode.USAGE,
        "001_a.sql and 1_b.sql both have version 1",
    ),
    "file-down-without-up": Case(
        {**OK_001, "002_b.down.sql": "SELECT 1;"}, (), ExitCode.USAGE, "002_b.down.sql has no"
    ),
    # Timestamp versions are welcome (issue 20); a folder mixing both styles is not.
    "file-mixed-version-styles": Case(
        {**OK_001, "20240101120000_init.sql": "SELECT 1;"},
        (),
        ExitCode.USAGE,
        "is numbered and 20240101120000_init.sql is a timestamp",
    ),
    "file-not-utf8": Case(
        {"001_a.sql": b"CREATE TABLE caf\xe9 (id int);\n"},
        (),
        ExitCode.USAGE,
        "001_a.sql: not valid UTF-8 at byte 16",
    ),
    "dir-empty": Case({}, (), ExitCode.USAGE, "no migration files (NNN_name.sql)"),
    "dir-missing": Case(
        OK_001,
        ("--migrations-dir", "/nonexistent/migrations"),
        ExitCode.USAGE,
        "/nonexistent/migrations does not exist",
    ),
    # --- header directives ---
    "directive-unknown": Case(
        {"001_a.sql": "-- natlangchain: transactional\nSELECT 1;"},
        (),
        ExitCode.USAGE,
        "001_a.sql:1: bad directive",
    ),
    "directive-bad-duration": Case(
        {"001_a.sql": "-- natlangchain: lock-timeout soon\nSELECT 1;"},
        (),
        ExitCode.USAGE,
        "001_a.sql:1: bad directive",
    ),
    "directive-bad-extension": Case(
        {"001_a.sql": "-- natlangchain: requires-extension Vector!!\nSELECT 1;"},
        (),
        ExitCode.USAGE,
        "001_a.sql:1: bad directive",
    ),
    "directive-missing-extension": Case(
        {**OK_001, "002_b.sql": "-- natlangchain: requires-extension no_such_ext\nSELECT 1;"},
        (),
        ExitCode.PREREQUISITE,
        "--skip 2",
    ),
    "directive-extension-too-old": Case(
        {"001_a.sql": "-- natlangchain: requires-extension vector >= 99.0\nSELECT 1;"},
        (),
        ExitCode.PREREQUISITE,
        "'vector' 99.0 or newer",
    ),
    # --- SQL ---
    "sql-syntax-error": Case(
        {**OK_001, "002_b.sql": "-- two\nCREATE TABLE b (id int,);\n"},
        (),
        ExitCode.MIGRATION_FAILED,
        "002_b.sql:2:24",
        applied=(1,),
    ),
    "sql-syntax-error-and-commit": Case(
        {"001_bad.sql": "CREATE TABLE x (id int primary key;\nCOMMIT;\n"},
        (),
        ExitCode.MIGRATION_FAILED,
        "001_bad.sql:1:35",
    ),
    "sql-begin-in-file": Case(
        {"001_a.sql": "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n"},
        (),
        ExitCode.USAGE,
        "001_a.sql:1: BEGIN inside a migration",
    ),
    "sql-commit-in-no-transaction-file": Case(
        {"001_a.sql": NO_TX + "CREATE TABLE a (id int);\nCOMMIT;\n"},
        (),
        ExitCode.USAGE,
        "001_a.sql:3: COMMIT inside a migration",
    ),
    "sql-missing-table": Case(
        {**OK_001, "002_b.sql": "INSERT INTO nowhere VALUES (1);\n"},
        (),
        ExitCode.MIGRATION_FAILED,
        "002_b.sql:1:13",
        applied=(1,),
    ),
    "sql-runtime-error-rolls-back-whole-file": Case(
        {**OK_001, "002_b.sql": "CREATE TABLE b (id int);\nSELECT 1/0;\n"},
        (),
        ExitCode.MIGRATION_FAILED,
        "002_b",
        applied=(1,),
    ),
    "sql-no-transaction-statement-fails": Case(
        {**OK_001, "002_b.sql": NO_TX + "INSERT INTO a VALUES ('x');\nCREATE TABLE b (id int);\n"},
        (),
        ExitCode.MIGRATION_FAILED,
        "002_b.sql:2:23",
        applied=(1,),
    ),
    "sql-no-transaction-syntax-error-after-a-good-file": Case(
        {**OK_001, "002_b.sql": NO_TX + "CREATE TABLE b (id int);\nSELEC 1;\n"},
        (),
        ExitCode.USAGE,
        "002_b.sql:3:1",
    ),
    "sql-no-transaction-syntax-error": Case(
        {"001_a.sql": NO_TX + "CREATE TABLE a (id int;\n"},
        (),
        ExitCode.USAGE,
        "001_a.sql:2:23",
    ),
    "sql-statement-timeout": Case(
        {"001_a.sql": "SELECT pg_sleep(5);\n"},
        ("--statement-timeout", "200ms"),
        ExitCode.SERVER_SETTING,
        "57014",
    ),
    # --- flags and their combinations ---
    "flag-version-unknown": Case(
        OK_001, ("--version", "9"), ExitCode.USAGE, "--version 9 matches no migration file"
    ),
    "flag-skip-unknown": Case(
        OK_001, ("--skip", "9"), ExitCode.USAGE, "--skip 9 matches no migration file"
    ),
    "flag-version-not-a-number": Case(OK_001, ("--version", "two"), ExitCode.USAGE, "--version"),
    "flag-status-and-check": Case(OK_001, ("--status", "--check"), ExitCode.USAGE, "--check"),
    "flag-rollback-version": Case(
        OK_001, ("--rollback", "--version", "1"), ExitCode.USAGE, "use --rollback --to N"
    ),
    "flag-json-alone": Case(OK_001, ("--json",), ExitCode.USAGE, "--json goes with"),
    "flag-dry-run-with-repair": Case(
        OK_001, ("--repair", "--dry-run"), ExitCode.USAGE, "--dry-run does not go with --repair"
    ),
    "flag-steps-and-to": Case(
        OK_001, ("--rollback", "--steps", "1", "--to", "0"), ExitCode.USAGE, "give one"
    ),
    "flag-bad-lock-mode": Case(
        OK_001, ("--lock-mode", "pgbouncer"), ExitCode.USAGE, "--lock-mode: invalid choice"
    ),
    "flag-bad-pg-lock-timeout": Case(
        OK_001,
        ("--pg-lock-timeout", "5 parsecs"),
        ExitCode.USAGE,
        "--pg-lock-timeout '5 parsecs' is not a duration",
    ),
    "flag-bad-statement-timeout": Case(
        OK_001,
        ("--statement-timeout", "1y"),
        ExitCode.USAGE,
        "--statement-timeout '1y' is not a duration",
    ),
    "flag-unknown": Case(OK_001, ("--force",), ExitCode.USAGE, "unrecognized arguments: --force"),
    "flag-no-transaction-in-transaction-lock-mode": Case(
        {"001_a.sql": NO_TX + "SELECT 1;\n"},
        ("--lock-mode", "transaction"),
        ExitCode.USAGE,
        "001_a.sql runs without a transaction",
    ),
    # --- setting variables, validated like their flags ---
    "env-lock-timeout": Case(
        OK_001,
        (),
        ExitCode.USAGE,
        "--lock-timeout: invalid float value: 'forever'",
        env=(("NATLANGCHAIN_MIGRATE_LOCK_TIMEOUT", "forever"),),
    ),
    "env-wait": Case(
        OK_001, (), ExitCode.USAGE, "--wait", env=(("NATLANGCHAIN_MIGRATE_WAIT", "1min"),)
    ),
    "env-lock-retries": Case(
        OK_001,
        (),
        ExitCode.USAGE,
        "--lock-retries",
        env=(("NATLANGCHAIN_MIGRATE_LOCK_RETRIES", "many"),),
    ),
    "env-log-format": Case(
        OK_001,
        (),
        ExitCode.USAGE,
        "NATLANGCHAIN_MIGRATE_LOG_FORMAT='jsno'",
        env=(("NATLANGCHAIN_MIGRATE_LOG_FORMAT", "jsno"),),
    ),
    "env-lock-mode": Case(
        OK_001,
        (),
        ExitCode.USAGE,
        "NATLANGCHAIN_MIGRATE_LOCK_MODE='pgbouncer'",
        env=(("NATLANGCHAIN_MIGRATE_LOCK_MODE", "pgbouncer"),),
    ),
    "env-pg-lock-timeout": Case(
        OK_001,
        (),
        ExitCode.USAGE,
        "is not a duration",
        env=(("NATLANGCHAIN_MIGRATE_PG_LOCK_TIMEOUT", "5 s"),),
    ),
    "env-migrations-dir-typo": Case(
        OK_001,
        (),
        ExitCode.USAGE,
        "does not exist",
        env=(("NATLANGCHAIN_MIGRATE_DIR", "/nonexistent/migrationz"),),
    ),
}


async def _state(url: str) -> tuple[list[int], list[str]]:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        versions: list[int] = []
        if await conn.fetchval("SELECT to_regclass('schema_migrations')"):
            versions = [
                r["version"]
                for r in await conn.fetch(
                    "SELECT version FROM schema_migrations WHERE complete ORDER BY 1"
                )
            ]
        return versions, [r["tablename"] for r in tables]
    finally:
        await conn.close()


def _write(folder: Path, files: Mapping[str, str | bytes]) -> None:
    folder.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_gets_one_clear_line_and_changes_nothing(
    database_url: str, admin_url: str, tmp_path: Path, case: Case
) -> None:
    folder = tmp_path / "m"
    _write(folder, case.files)
    database = database_url.rsplit("/", 1)[-1]
    port = admin_url.rsplit(":", 1)[-1].split("/", 1)[0]
    dsn = database_url if case.dsn is None else case.dsn.format(port=port, db=database)
    own_dir = "--migrations-dir" in case.args or "NATLANGCHAIN_MIGRATE_DIR" in dict(case.env)
    args = case.args if own_dir else ("--migrations-dir", str(folder), *case.args)
    result = run_cli(*args, database_url=dsn, env=dict(case.env))
    output = result.stdout + result.stderr
    assert result.returncode == case.exit_code, output
    assert case.says in output
    assert "Traceback" not in output
    for secret in (PASSWORD, "Wr0ngPass"):
        assert secret not in output
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failures = [e for e in events if e["event"] == "run_failed"]
    usage = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(failures) + len(usage) == 1, result.stderr
    if failures:
        assert failures[0]["exit_code"] == case.exit_code
    versions, tables = asyncio.run(_state(with_database(admin_url, database)))
    assert versions == list(case.applied)
    expected_tables = {"a"} if 1 in case.applied else set()
    assert set(tables) - {"schema_migrations"} == expected_tables


def test_the_catalogue_holds_at_least_fifty_cases() -> None:
    assert len(CASES) >= 50
