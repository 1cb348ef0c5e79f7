"""What a person or a log shipper sees while migrations run: a heartbeat during a long
migration, plain progress lines in a terminal, JSON events otherwise."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import migrate
from natlangchain_migrate.errors import MigrationFailedError
from natlangchain_migrate.logs import _ConsoleLines
from tests.conftest import fetchval, log_events, run_cli, write_migrations

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


# One history in three layouts: the table, a slow file (heartbeats), a backfill (progress,
# and waits while a session waits for a lock on the table), and a no-transaction file whose
# second statement fails until its table exists (resumed at that statement).
_BODIES = (
    "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);\n"
    "INSERT INTO big (id) SELECT g FROM generate_series(1, 3000) g;\n",
    "SELECT pg_sleep(0.4);\n",
    "-- natlangchain: backfill table=big key=id batch=500\n"
    "UPDATE big SET v = id WHERE id BETWEEN :lo AND :hi;\n",
    "-- natlangchain: no-transaction\n"
    "CREATE TABLE resumed (id int);\nINSERT INTO later VALUES (1);\n",
)
_LAYOUTS = {
    "golang-migrate": ("001_big.up.sql", "002_slow.up.sql", "003_fill.up.sql", "004_go.up.sql"),
    "prisma": tuple(
        f"2024010100000{n}_{label}/migration.sql"
        for n, label in ((1, "big"), (2, "slow"), (3, "fill"), (4, "go"))
    ),
    "flyway": ("V1__big.sql", "V2__slow.sql", "V3__fill.sql", "V4__go.sql"),
}


def _console(event: Mapping[str, Any]) -> str:
    return str(_ConsoleLines(colors=False)(None, "info", dict(event)))


@pytest.mark.anyio
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
async def test_progress_events_carry_the_file_as_it_is_in_the_folder(
    layout: str, database_url: str, tmp_path: Path
) -> None:
    """migration_running, backfill_progress, backfill_throttled and migration_resuming had
    no ``file``, and their console lines said {name}.sql: 001_big.sql for golang-migrate's
    001_big.up.sql, 20240101000001_big.sql for prisma's folder."""
    files = _LAYOUTS[layout]
    folder = write_migrations(tmp_path / "m", dict(zip(files, _BODIES, strict=True)))
    first = int(re.match(r"V?(\d+)", files[0])[1])  # type: ignore[index]
    await migrate(database_url, migrations_dir=folder, target=first)
    holder, waiter = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    await holder.execute("BEGIN; LOCK TABLE big IN SHARE MODE")
    waiting = asyncio.ensure_future(waiter.execute("UPDATE big SET v = v WHERE id = 1"))
    try:
        with capture_logs() as events:
            run = asyncio.ensure_future(
                migrate(database_url, migrations_dir=folder, progress_interval=0.1)
            )
            for _ in range(1200):
                if any(e["event"] == "backfill_throttled" for e in events) or run.done():
                    break
                await asyncio.sleep(0.05)
            await holder.execute("COMMIT")
            await waiting
            with pytest.raises(MigrationFailedError):
                await run
    finally:
        await holder.close()
        await waiter.close()
    await fetchval(database_url, "CREATE TABLE later (id int)")
    with capture_logs() as resumed:
        await migrate(database_url, migrations_dir=folder)
    expected = {
        "migration_running": (files[1], "  ... {} still running after "),
        "backfill_throttled": (files[2], "  ... {} waits: lock_waits 1, over 0"),
        "backfill_progress": (files[2], "  ... {}: 3000 of about 3000 rows"),
        "migration_resuming": (files[3], "Resuming: {} at statement 2 of 2"),
    }
    for name, (file, line) in expected.items():
        found = [e for e in [*events, *resumed] if e["event"] == name]
        assert found, f"no {name} event"
        assert {e["file"] for e in found} == {file}, found
        assert _console(found[-1]).startswith(line.format(file)), _console(found[-1])
