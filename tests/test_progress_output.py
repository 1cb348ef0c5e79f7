"""What a person or a log shipper sees while migrations run: a heartbeat during a long
migration, plain progress lines in a terminal, JSON events otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import migrate
from tests.conftest import log_events, run_cli, write_migrations

SLOW = {
    "001_fast.sql": "CREATE TABLE a (id int);\n",
    "002_slow.sql": "SELECT pg_sleep(1.2);\nCREATE TABLE b (id int);\n",
}


@pytest.mark.anyio
async def test_a_long_migration_logs_a_heartbeat_until_it_ends(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", SLOW)
    with capture_logs() as events:
        await migrate(database_url, migrations_dir=folder, progress_interval=0.3)
    names = [event["event"] for event in events]
    running = [event for event in events if event["event"] == "migration_running"]
    assert len(running) >= 2, names
    assert {event["version"] for event in running} == {2}
    assert [event["elapsed_s"] for event in running] == sorted(e["elapsed_s"] for e in running)
    applying_slow = [i for i, name in enumerate(names) if name == "migration_applying"][1]
    applied_slow = [i for i, name in enumerate(names) if name == "migration_applied"][1]
    heartbeats = [i for i, name in enumerate(names) if name == "migration_running"]
    # Every heartbeat falls between the slow migration's start and its end: none after.
    assert all(applying_slow < i < applied_slow for i in heartbeats), names


def test_console_format_prints_one_plain_line_per_migration(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    folder = write_migrations(folder, {"002_b.sql": "CREATE TABLE b (id int);\n"})
    run = run_cli(
        "--migrations-dir",
        str(folder),
        "--log-format",
        "console",
        database_url=database_url,
        env={"NATLANGCHAIN_MIGRATE_LOG_FORMAT": "console"},
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert "Applying: 001_a.sql (1/2)" in lines
    assert "Applying: 002_b.sql (2/2)" in lines
    assert any(re.fullmatch(r"Applied: 001_a\.sql in \d+ms", line) for line in lines), lines
    assert any(re.fullmatch(r"Done: 2 applied in \d+ms", line) for line in lines), lines
    again = run_cli(
        "--migrations-dir", str(folder), "--log-format", "console", database_url=database_url
    )
    assert "Up to date: 2 migrations applied" in again.stderr.splitlines()


def test_json_format_keeps_every_field_of_the_progress_events(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    run = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert run.returncode == 0, run.stderr
    events = {event["event"]: event for event in log_events(run.stderr)}
    assert events["migration_applying"]["name"] == "001_a"
    assert events["migration_applying"]["n"] == 1
    assert isinstance(events["migration_applied"]["duration_ms"], float | int)
    assert "Applying:" not in run.stderr


@pytest.mark.parametrize("lock_mode", ["session", "transaction"])
def test_console_lines_name_the_file_as_it_is_in_the_folder(
    lock_mode: str, database_url: str, tmp_path: Path
) -> None:
    """They said {name}.sql: 'Applying: 001_g.sql' for golang-migrate's 001_g.up.sql, and
    '20240101000000_a.sql' for prisma's 20240101000000_a/migration.sql."""
    golang = write_migrations(tmp_path / "g", {"001_g.up.sql": "CREATE TABLE g (id int);\n"})
    prisma = tmp_path / "p" / "20240101000000_a"
    prisma.mkdir(parents=True)
    (prisma / "migration.sql").write_text("CREATE TABLE p (id int);\n")
    for folder, shown in (
        (golang, "001_g.up.sql"),
        (prisma.parent, "20240101000000_a/migration.sql"),
    ):
        flags = ("--migrations-dir", str(folder), "--lock-mode", lock_mode, "--schema", folder.name)
        run = run_cli(*flags, "--log-format", "console", database_url=database_url)
        assert run.returncode == 0, run.stderr
        lines = run.stderr.splitlines()
        assert f"Applying: {shown} (1/1)" in lines, lines
        assert any(re.fullmatch(rf"Applied: {re.escape(shown)} in \d+ms", x) for x in lines), lines


def test_the_rollback_line_names_the_down_file_as_it_is_in_the_folder(
    database_url: str, tmp_path: Path
) -> None:
    """It said {name}.sql: 'Rolled back: 001_g.sql' for golang-migrate's 001_g.down.sql,
    and '20240101000000_a.sql' for prisma's 20240101000000_a/down.sql."""
    golang = write_migrations(
        tmp_path / "g",
        {"001_g.up.sql": "CREATE TABLE g (id int);\n", "001_g.down.sql": "DROP TABLE g;\n"},
    )
    prisma = write_migrations(
        tmp_path / "p",
        {
            "20240101000000_a/migration.sql": "CREATE TABLE p (id int);\n",
            "20240101000000_a/down.sql": "DROP TABLE p;\n",
        },
    )
    plain = write_migrations(
        tmp_path / "n",
        {"001_n.sql": "CREATE TABLE n (id int);\n", "001_n.down.sql": "DROP TABLE n;\n"},
    )
    for folder, shown in (
        (golang, "001_g.down.sql"),
        (prisma, "20240101000000_a/down.sql"),
        (plain, "001_n.down.sql"),
    ):
        flags = ("--migrations-dir", str(folder), "--schema", folder.name)
        assert run_cli(*flags, database_url=database_url).returncode == 0
        run = run_cli(*flags, "--rollback", "--log-format", "console", database_url=database_url)
        assert run.returncode == 0, run.stderr
        assert f"Rolled back: {shown}" in run.stderr.splitlines(), run.stderr
