"""Nothing destructive unless asked, and only what was asked: rollback's flags, its dry run,
down files without a transaction, errors that point into the down file, and drift advice
that is safe to follow literally. What the library does is run in process; the CLI runs
for its flags, output and exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import DriftError, MigrationFailedError, migrate, repair, rollback
from natlangchain_migrate.errors import ExitCode
from tests.conftest import ledger_rows, log_events, run_cli, tables_but_the_ledger, write_migrations

NO_TX = "-- natlangchain: no-transaction\n"
FILES = {
    "001_a.sql": "CREATE TABLE a (id int);\n",
    "001_a.down.sql": "DROP TABLE a;\n",
    "002_b.sql": "CREATE TABLE b (id int);\n",
    "002_b.down.sql": "DROP TABLE b;\n",
    "003_c.sql": "CREATE TABLE c (id int);\n",
    "003_c.down.sql": "DROP TABLE c;\n",
}


def _tables(url: str) -> list[str]:
    return asyncio.run(tables_but_the_ledger(url))


def _versions(url: str) -> list[int]:
    return [row["version"] for row in asyncio.run(ledger_rows(url))]


@pytest.fixture
def applied(database_url: str, tmp_path: Path) -> tuple[str, Path]:
    folder = write_migrations(tmp_path / "m", FILES)
    assert len(asyncio.run(migrate(database_url, migrations_dir=folder)).applied) == 3
    return database_url, folder


def test_rollback_dry_run_prints_the_down_sql_and_changes_nothing(
    applied: tuple[str, Path],
) -> None:
    url, folder = applied
    result = run_cli("--rollback", "--dry-run", "--migrations-dir", str(folder), database_url=url)
    assert result.returncode == 0, result.stderr
    assert "-- 003_c: down file\nDROP TABLE c;" in result.stdout
    as_json = run_cli(
        "--rollback",
        "--dry-run",
        "--json",
        "--to",
        "1",
        "--migrations-dir",
        str(folder),
        database_url=url,
    )
    assert [(u["version"], u["down_sql"]) for u in json.loads(as_json.stdout)] == [
        (3, "DROP TABLE c;\n"),
        (2, "DROP TABLE b;\n"),
    ]
    assert _tables(url) == ["a", "b", "c"]
    assert _versions(url) == [1, 2, 3]


def test_rollback_to_undoes_everything_above_n_newest_first(applied: tuple[str, Path]) -> None:
    url, folder = applied
    with capture_logs() as events:
        undone = asyncio.run(rollback(url, migrations_dir=folder, to=1))
    assert [result.version for result in undone] == [3, 2]
    done = [e["version"] for e in events if e["event"] == "rollback_done"]
    assert done == [3, 2]
    assert _tables(url) == ["a"]
    assert _versions(url) == [1]


def test_rollback_steps_undoes_the_last_k(applied: tuple[str, Path]) -> None:
    url, folder = applied
    result = run_cli(
        "--rollback", "--steps", "2", "--migrations-dir", str(folder), database_url=url
    )
    assert result.returncode == 0, result.stderr
    assert _versions(url) == [1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--rollback", "--version", "1"), "use --rollback --to N"),
        (("--rollback", "--to", "7"), "--to 7 is not an applied version"),
        (("--rollback", "--steps", "0"), "--steps 0"),
        (("--rollback", "--steps", "1", "--to", "1"), "give one"),
        (("--rollback", "--skip", "1"), "--skip does not go with --rollback"),
        (("--rollback", "--json"), "--json goes with"),
        (("--status", "--dry-run"), "--dry-run does not go with --status"),
        (("--check", "--version", "1"), "--version does not go with --check"),
        (("--repair", "--dry-run"), "--dry-run does not go with --repair"),
        (("--repair", "--json"), "--json does not go with --repair"),
        (
            (
                "--to",
                "1",
            ),
            "--to does not go with applying",
        ),
        (
            (
                "--steps",
                "1",
            ),
            "--steps does not go with applying",
        ),
        (("--json",), "--json goes with"),
        (("--status", "--check"), "not allowed with argument"),
    ],
)
def test_flags_that_cannot_combine_are_refused_and_nothing_changes(
    applied: tuple[str, Path], args: tuple[str, ...], says: str
) -> None:
    url, folder = applied
    result = run_cli(*args, "--migrations-dir", str(folder), database_url=url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert _versions(url) == [1, 2, 3]
    assert _tables(url) == ["a", "b", "c"]


def test_vanished_file_advice_is_safe_to_follow_literally(applied: tuple[str, Path]) -> None:
    url, folder = applied
    (folder / "001_a.sql").unlink()
    (folder / "001_a.down.sql").unlink()
    with pytest.raises(DriftError) as drift:
        asyncio.run(migrate(url, migrations_dir=folder))
    assert drift.value.exit_code == ExitCode.DRIFT
    error = str(drift.value)
    assert "--rollback" not in error
    assert "forget its row with --repair" in error
    asyncio.run(repair(url, migrations_dir=folder))
    assert _versions(url) == [2, 3]
    assert _tables(url) == ["a", "b", "c"]  # no SQL ran: 002's table is untouched
    assert asyncio.run(migrate(url, migrations_dir=folder)).up_to_date


def test_no_transaction_down_file_drops_an_index_concurrently(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (v int);\n",
            "002_i.sql": NO_TX + "CREATE INDEX CONCURRENTLY t_v ON t (v);\n",
            "002_i.down.sql": NO_TX + "DROP INDEX CONCURRENTLY t_v;\n",
        },
    )
    asyncio.run(migrate(database_url, migrations_dir=folder))
    (undone,) = asyncio.run(rollback(database_url, migrations_dir=folder))
    assert (undone.version, undone.ran_down_file) == (2, True)
    assert _versions(database_url) == [1]


def test_a_failing_down_file_names_its_line_and_leaves_the_row(
    applied: tuple[str, Path],
) -> None:
    url, folder = applied
    (folder / "003_c.down.sql").write_text("-- undo\nDROP TABLE c;\nSELECT nothing FROM b;\n")
    with capture_logs() as events, pytest.raises(MigrationFailedError) as error:
        asyncio.run(rollback(url, migrations_dir=folder))
    assert error.value.exit_code == ExitCode.MIGRATION_FAILED
    failed = next(e for e in events if e["event"] == "rollback_failed")
    assert failed["file"] == "003_c.down.sql:3:8"
    assert _versions(url) == [1, 2, 3]
    assert _tables(url) == ["a", "b", "c"]


def test_status_and_check_count_a_changed_migration_the_same_way(
    applied: tuple[str, Path],
) -> None:
    url, folder = applied
    (folder / "002_b.sql").write_text("CREATE TABLE b (id bigint);\n")
    (folder / "004_d.sql").write_text("CREATE TABLE d (id int);\n")
    status = run_cli("--status", "--migrations-dir", str(folder), database_url=url)
    check = run_cli("--check", "--migrations-dir", str(folder), database_url=url)
    check_json = run_cli("--check", "--json", "--migrations-dir", str(folder), database_url=url)
    assert "Applied: 3 / 4" in status.stdout
    assert check.stdout.strip() == "1 drifted: 3 of 4 applied"
    assert check.returncode == check_json.returncode == ExitCode.CHECK_DRIFT
    summary = json.loads(check_json.stdout)
    assert (summary["applied"], summary["total"], summary["drifted"]) == (3, 4, [2])


@pytest.mark.parametrize(
    ("files", "env", "says"),
    [
        ({}, {}, "no migration files (NNN_name.sql) in"),
        ({"001_init.SQL": "SELECT 1;\n"}, {}, "001_init.SQL: migration files end in lowercase"),
        (
            {"001_a.sql": "SELECT 1;\n", "20240101120000_init.sql": "SELECT 1;\n"},
            {},
            "001_a.sql is numbered and 20240101120000_init.sql is a timestamp",
        ),
        (
            {"001_a.sql": "SELECT 1;\n"},
            {"NATLANGCHAIN_MIGRATE_LOG_FORMAT": "jsno"},
            "NATLANGCHAIN_MIGRATE_LOG_FORMAT='jsno' is not one of",
        ),
        (
            {"001_a.sql": "SELECT 1;\n"},
            {"NATLANGCHAIN_MIGRATE_LOCK_MODE": "pgbouncer"},
            "NATLANGCHAIN_MIGRATE_LOCK_MODE='pgbouncer' is not one of",
        ),
        ({"001_a.sql": "SELECT 1;\n"}, {"DATABASE_URL": ""}, "is set but empty"),
    ],
    ids=[
        "empty-dir",
        "uppercase-suffix",
        "mixed-versions",
        "log-format",
        "lock-mode",
        "empty-url",
    ],
)
def test_bad_settings_are_errors_not_fallbacks(
    database_url: str, tmp_path: Path, files: dict[str, str], env: dict[str, str], says: str
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    result = run_cli("--migrations-dir", str(folder), database_url=database_url, env=env)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert says in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_run_migrations_inside_an_event_loop_says_to_await_migrate(
    database_url: str,
) -> None:
    from natlangchain_migrate import ConfigurationError, run_migrations

    with pytest.raises(ConfigurationError, match=r"await natlangchain_migrate\.migrate\(\)"):
        run_migrations(database_url)


def test_a_negative_to_is_refused_before_the_lock(migrated_database_url: str) -> None:
    result = run_cli("--rollback", "--to", "-1", database_url=migrated_database_url)
    assert result.returncode == ExitCode.USAGE
    assert "--to -1: give the version to keep" in result.stderr
    assert "lock_acquired" not in [e["event"] for e in log_events(result.stderr)]
    assert [row["version"] for row in asyncio.run(ledger_rows(migrated_database_url))] == [1, 2, 3]
