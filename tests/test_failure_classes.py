"""Every SQLSTATE a migration can raise gets the exit code and advice of its cause.

A migration can raise any code (``RAISE EXCEPTION 'x' USING ERRCODE = '53100'``): the
sweep raises every code asyncpg's exception classes enumerate, from an up file and a
down file, transactional and not, through the library (which the CLI calls, so the
exit code is the error's ``exit_code``), and checks the exit code of the code's cause,
one line, no password, the advice of the cause, and nothing half-applied. A sample per
cause goes through the CLI too, for the process's exit code and "no traceback".

No code is left out: a RAISE can raise every one of them, the success and warning
classes (00, 01, 02) included; PostgreSQL sends those back as errors, and asyncpg
makes a warning of 01 and 02, which the runner treats as the server's error it is.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from asyncpg.exceptions._base import PostgresMessageMeta

from harness.servers.pgcluster import PASSWORD
from natlangchain_migrate import MigrateError, migrate, rollback
from natlangchain_migrate.causes import Cause, classify, table
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.failures import EFFECT_ALREADY_THERE
from tests.conftest import log_events, run_cli, write_migrations

CODES = sorted(PostgresMessageMeta._message_map)  # type: ignore[attr-defined]
README = Path(__file__).resolve().parents[1] / "README.md"
NO_TX = "-- natlangchain: no-transaction\n"


def _raise(code: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{code}'; END $$;\n"


def expected_exit(code: str) -> ExitCode:
    return classify(code).exit_code


@pytest.mark.parametrize("code", CODES)
def test_every_code_has_a_cause_and_only_the_files_say_fix_the_file(code: str) -> None:
    found = classify(code)
    assert found.exit_code in set(ExitCode)
    assert found.exit_code is not ExitCode.INTERNAL
    if found.cause is not Cause.FILE:
        assert "Fix the file" not in found.advice


def test_readme_lists_the_table_row_for_row() -> None:
    text = README.read_text(encoding="utf-8")
    for code, found in table():
        assert f"| `{code}` | {found.cause.value} | {int(found.exit_code)} |" in text


def test_the_server_classes_are_never_the_file() -> None:
    for code in ("53100", "53200", "53300", "57014", "25006", "25P04", "58030", "XX000"):
        assert classify(code).cause is not Cause.FILE, code
    for code in ("42601", "22012", "23505", "42P01", "P0001", "0A000", "01000"):
        assert classify(code).cause is Cause.FILE, code


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def _ledger(url: str) -> dict[int, tuple[bool, int | None]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, complete, statements_done FROM schema_migrations")
        return {row["version"]: (row["complete"], row["statements_done"]) for row in rows}
    finally:
        await conn.close()


def _check_message(error: MigrateError, code: str, filename: str, *, resumed: bool = False) -> None:
    text = str(error)
    if resumed and code in EFFECT_ALREADY_THERE:  # a resumed statement's effect is there
        assert "already in the database" in text, text
        return
    assert "\n" not in text, text
    assert PASSWORD not in text
    assert code in text, text
    assert filename in text, text
    found = classify(code)
    # The advice of the cause; three causes have messages of their own with the facts.
    fragment = {
        Cause.CONNECTION: "Nothing is wrong with the file",
        Cause.PRIVILEGE: "GRANT",
    }.get(found.cause, found.advice)
    if found.exit_code is ExitCode.LOCK_RETRIES_EXHAUSTED:
        fragment = "--pg-lock-timeout"
    assert fragment in text, text
    if found.cause is not Cause.FILE:
        assert "Fix the file" not in text, text


FAST_RETRIES = 0


@pytest.mark.anyio
@pytest.mark.parametrize("transactional", [True, False], ids=["transaction", "no-transaction"])
async def test_every_sqlstate_raised_by_an_up_file(
    database_url: str, tmp_path: Path, transactional: bool
) -> None:
    """Each code in turn, from statement 2 of file 002 (statement 1 creates a table)."""
    head = "" if transactional else NO_TX
    folder = write_migrations(tmp_path / "m", {"001_base.sql": "CREATE TABLE base (id int);\n"})
    await migrate(database_url, migrations_dir=folder)
    wrong = []
    for code in CODES:
        (folder / "002_raise.sql").write_text(
            f"{head}CREATE TABLE IF NOT EXISTS half (id int);\n{_raise(code)}", encoding="utf-8"
        )
        with pytest.raises(MigrateError) as caught:
            await migrate(
                database_url, migrations_dir=folder, lock_retries=FAST_RETRIES, retry_delay=0.0
            )
        if caught.value.exit_code != expected_exit(code):
            wrong.append((code, int(caught.value.exit_code), str(caught.value)))
            continue
        _check_message(caught.value, code, "002_raise.sql", resumed=not transactional)
        ledger = await _ledger(database_url)
        if transactional:  # rolled back whole: no table, no row
            assert "half" not in await _tables(database_url), code
            assert set(ledger) == {1}, code
        else:  # statement 1 kept with its journal step; 2 to run again
            assert "half" in await _tables(database_url), code
            assert ledger[2] == (False, 1), code
    assert wrong == []


@pytest.mark.anyio
@pytest.mark.parametrize("transactional", [True, False], ids=["transaction", "no-transaction"])
async def test_every_sqlstate_raised_by_a_down_file(
    database_url: str, tmp_path: Path, transactional: bool
) -> None:
    head = "" if transactional else NO_TX
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_base.sql": "CREATE TABLE base (id int);\n",
            "002_t.sql": "CREATE TABLE t2 (id int);\n",
        },
    )
    await migrate(database_url, migrations_dir=folder)
    wrong = []
    for code in CODES:
        (folder / "002_t.down.sql").write_text(
            f"{head}DROP TABLE IF EXISTS t2;\n{_raise(code)}", encoding="utf-8"
        )
        with pytest.raises(MigrateError) as caught:
            await rollback(
                database_url, migrations_dir=folder, lock_retries=FAST_RETRIES, retry_delay=0.0
            )
        if caught.value.exit_code != expected_exit(code):
            wrong.append((code, int(caught.value.exit_code), str(caught.value)))
            continue
        _check_message(caught.value, code, "002_t.down.sql")
        assert set(await _ledger(database_url)) == {1, 2}, code  # its row stays
        if transactional:
            assert "t2" in await _tables(database_url), code
    assert wrong == []


# One code per cause, and the codes the issue names, through the CLI as users run it.
CLI_SAMPLE = sorted(
    {next(code for code in CODES if classify(code).cause is cause) for cause in Cause}
    | {"53100", "53200", "57014", "25006", "25P04", "01000", "22012", "55P03"}
)


@pytest.mark.parametrize("code", CLI_SAMPLE)
def test_the_cli_exits_with_the_causes_code_on_one_line(
    database_url: str, tmp_path: Path, code: str
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"001_base.sql": "CREATE TABLE base (id int);\n", "002_raise.sql": _raise(code)},
    )
    result = run_cli(
        "--migrations-dir", str(folder), "--lock-retries", "0", database_url=database_url
    )
    assert result.returncode == expected_exit(code), result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert len(failed) == 1
    assert code in failed[0]["error"]
    assert "002_raise.sql" in failed[0]["error"]


async def _alter_database(url: str, setting: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute("SET default_transaction_read_only = off")
        await conn.execute(f'ALTER DATABASE "{database}" SET {setting}')
    finally:
        await conn.close()


def test_a_read_only_database_is_exit_8_on_a_fresh_database_and_for_rollback(
    database_url: str, tmp_path: Path
) -> None:
    import asyncio

    folder = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    asyncio.run(_alter_database(database_url, "default_transaction_read_only = on"))
    fresh = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert fresh.returncode == ExitCode.READ_ONLY, fresh.stderr
    assert "Traceback" not in fresh.stderr
    assert "default_transaction_read_only" in fresh.stderr
    asyncio.run(_alter_database(database_url, "default_transaction_read_only = off"))
    assert run_cli("--migrations-dir", str(folder), database_url=database_url).returncode == 0
    asyncio.run(_alter_database(database_url, "default_transaction_read_only = on"))
    back = run_cli("--rollback", "--migrations-dir", str(folder), database_url=database_url)
    assert back.returncode == ExitCode.READ_ONLY, back.stderr
    assert "Fix the file" not in back.stderr


@pytest.mark.anyio
async def test_the_databases_transaction_timeout_does_not_cut_a_migration_short(
    database_url: str, tmp_path: Path
) -> None:
    """Like statement_timeout: a limit meant for the application's sessions."""
    conn = await asyncpg.connect(database_url)
    has_it = conn.get_server_version().major >= 17
    await conn.close()
    if not has_it:
        pytest.skip("transaction_timeout is PostgreSQL 17+")
    await _alter_database(database_url, "transaction_timeout = '300ms'")
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_slow.sql": "SELECT pg_sleep(0.6);\nCREATE TABLE a (id int);\n",
            "002_slow.sql": NO_TX + "SELECT pg_sleep(0.6);\nCREATE TABLE b (id int);\n",
        },
    )
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [1, 2]


def test_a_transaction_timeout_that_ends_the_session_is_a_server_limit_not_retried(
    database_url: str, tmp_path: Path
) -> None:
    """The session ended by the server's transaction_timeout (FATAL 25P04): exit 16,
    never 'connection lost', and --wait does not run it again."""
    import asyncio

    async def version() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(conn.get_server_version().major)
        finally:
            await conn.close()

    if asyncio.run(version()) < 17:
        pytest.skip("transaction_timeout is PostgreSQL 17+")
    folder = write_migrations(
        tmp_path / "m",
        {"001_a.sql": "SET LOCAL transaction_timeout = '100ms';\nSELECT pg_sleep(2);\n"},
    )
    result = run_cli("--migrations-dir", str(folder), "--wait", "5", database_url=database_url)
    assert result.returncode == ExitCode.SERVER_SETTING, result.stderr
    events = [e["event"] for e in log_events(result.stderr)]
    assert "connection_lost_reconnecting" not in events
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert "25P04" in failed[0]["error"]
    assert "001_a.sql" in failed[0]["error"]


@pytest.mark.anyio
async def test_an_extension_the_server_does_not_have_is_a_prerequisite(
    database_url: str, tmp_path: Path
) -> None:
    from natlangchain_migrate import PrerequisiteError

    for head in ("", NO_TX):
        folder = write_migrations(
            tmp_path / f"m{len(head)}",
            {"001_x.sql": f"{head}CREATE EXTENSION IF NOT EXISTS no_such_extension;\n"},
        )
        with pytest.raises(PrerequisiteError) as caught:
            await migrate(database_url, migrations_dir=folder)
        assert "no_such_extension" in str(caught.value)
        assert "--skip 1" in str(caught.value)
        assert caught.value.exit_code == ExitCode.PREREQUISITE
