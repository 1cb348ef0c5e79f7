"""Repeatable migrations (R__name.sql) against a real PostgreSQL: applied after the versioned
ones in name order, again whenever the file changes, never when it does not."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from harness.servers.sql import fetch
from natlangchain_migrate import (
    ConfigurationError,
    MigrationFailedError,
    migrate,
    repair,
    rollback,
    status,
)
from natlangchain_migrate.discovery import Migration, checksum
from natlangchain_migrate.errors import ExitCode, LockTimeoutError
from natlangchain_migrate.locks import default_namespace, lock_key
from natlangchain_migrate.plan import AppliedMigration, State, plan_migrations
from natlangchain_migrate.repeatables import Repeatable, load_repeatables, with_repeatables
from tests.conftest import (
    ledger_rows,
    log_events,
    migration_locks_held,
    run_cli,
    start_cli,
    write_migrations,
)

VERSIONED = {
    "001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, price int NOT NULL);",
    "002_audit.sql": "CREATE TABLE runs (file text NOT NULL);",
}
# R__b_views depends on R__a_base: only name order makes it work.
REPEATABLE_A = (
    "CREATE OR REPLACE VIEW cheap_items AS SELECT id FROM items WHERE price < 10;\n"
    "INSERT INTO runs VALUES ('a');\n"
)
REPEATABLE_B = (
    "CREATE OR REPLACE VIEW cheap_count AS SELECT count(*) AS n FROM cheap_items;\n"
    "INSERT INTO runs VALUES ('b');\n"
)


def _folder(tmp_path: Path, **extra: str) -> Path:
    files = VERSIONED | {"R__a_base.sql": REPEATABLE_A, "R__b_views.sql": REPEATABLE_B}
    return write_migrations(tmp_path / "migrations", files | extra)


async def _runs(url: str) -> list[str]:
    return [row["file"] for row in await fetch(url, "SELECT file FROM runs")]


async def _repeatable_rows(url: str) -> dict[str, str]:
    rows = await fetch(url, "SELECT name, checksum FROM schema_repeatables")
    return {row["name"]: row["checksum"] for row in rows}


# --- the plan, pure ---------------------------------------------------------------------


def _repeatable(name: str, sql: str) -> Repeatable:
    return Repeatable(-1, name, f"{name}.sql", sql, checksum(sql))


def test_plan_puts_new_and_changed_repeatables_after_versioned_ones_in_name_order() -> None:
    versioned = [Migration(1, "001_a", "001_a.sql", "SELECT 1", checksum("SELECT 1"))]
    same, changed, new = (
        _repeatable("R__a", "SELECT 'a'"),
        _repeatable("R__b", "SELECT 'b2'"),
        _repeatable("R__c", "SELECT 'c'"),
    )
    recorded = [
        AppliedMigration(-1, "R__a", checksum=same.checksum),
        AppliedMigration(-1, "R__b", checksum=checksum("SELECT 'b1'")),
        AppliedMigration(-1, "R__gone", checksum="x"),
    ]
    plan = with_repeatables(plan_migrations(versioned, []), [same, changed, new], recorded)
    assert [m.name for m in plan.pending] == ["001_a", "R__b", "R__c"]
    states = {entry.name: entry.state for entry in plan.repeatables}
    assert states == {
        "R__a": State.APPLIED,
        "R__b": State.PENDING,
        "R__c": State.PENDING,
        "R__gone": State.MISSING,
    }
    assert plan.missing == []  # a vanished repeatable is not drift


@pytest.mark.parametrize(
    ("recorded_release", "runner_release", "changed", "gone", "expected"),
    [
        (4, 3, True, State.FUTURE, State.FUTURE),  # a newer release's: left alone
        (4, 3, False, State.FUTURE, State.APPLIED),  # same file as the newer one: current
        (4, 4, True, State.MISSING, State.PENDING),  # same release: re-applied as ever
        (3, 4, True, State.MISSING, State.PENDING),  # higher release: re-applied
        (None, 3, True, State.MISSING, State.PENDING),  # row from before the column
        (4, None, True, State.MISSING, State.PENDING),  # a folder without versions
    ],
)
def test_a_repeatable_a_newer_release_applied_is_future_for_an_older_one(
    recorded_release: int | None,
    runner_release: int | None,
    changed: bool,
    gone: State,
    expected: State,
) -> None:
    mine = _repeatable("R__v", "SELECT 1")
    value = checksum("SELECT 2") if changed else mine.checksum
    rows = [
        AppliedMigration(-1, "R__v", checksum=value, release=recorded_release),
        AppliedMigration(-1, "R__theirs", checksum="x", release=recorded_release),
    ]
    plan = with_repeatables(plan_migrations([], []), [mine], rows, release=runner_release)
    assert {e.name: e.state for e in plan.repeatables} == {"R__v": expected, "R__theirs": gone}
    assert [m.name for m in plan.pending] == (["R__v"] if expected is State.PENDING else [])
    assert [e.name for e in plan.future_repeatables] == [
        name for name, state in (("R__v", expected), ("R__theirs", gone)) if state is State.FUTURE
    ]


# --- applying, in process -----------------------------------------------------------------


@pytest.mark.anyio
async def test_repeatables_run_after_the_versioned_ones_in_name_order(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=folder)
    applied = [(result.version, result.name) for result in report.applied]
    assert applied == [
        (1, "001_items"),
        (2, "002_audit"),
        (None, "R__a_base"),
        (None, "R__b_views"),
    ]
    assert [e["name"] for e in events if e["event"] == "migration_applied"][2:] == [
        "R__a_base",
        "R__b_views",
    ]
    assert await _runs(database_url) == ["a", "b"]
    assert await _repeatable_rows(database_url) == {
        "R__a_base": checksum(REPEATABLE_A),
        "R__b_views": checksum(REPEATABLE_B),
    }
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]


@pytest.mark.anyio
async def test_unchanged_repeatables_leave_the_start_up_lock_free(
    database_url: str, tmp_path: Path
) -> None:
    """Another session holds the migration lock: a run that tried to take it would time out."""
    folder = _folder(tmp_path)
    await migrate(database_url, migrations_dir=folder)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(default_namespace("public")))
        with capture_logs() as events:
            report = await migrate(database_url, migrations_dir=folder, lock_timeout=0.5)
        assert report.up_to_date
        assert "lock_acquired" not in [event["event"] for event in events]
        (folder / "R__b_views.sql").write_text(REPEATABLE_B + "-- edited\n", encoding="utf-8")
        with pytest.raises(LockTimeoutError):  # now there is work: it needs the lock
            await migrate(database_url, migrations_dir=folder, lock_timeout=0.5)
    finally:
        await holder.close()
    assert await _runs(database_url) == ["a", "b"]


@pytest.mark.anyio
async def test_a_changed_repeatable_is_applied_again_and_only_it(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    await migrate(database_url, migrations_dir=folder)
    edited = REPEATABLE_A.replace("price < 10", "price < 20")
    (folder / "R__a_base.sql").write_text(edited, encoding="utf-8")
    report = await migrate(database_url, migrations_dir=folder)
    assert [result.name for result in report.applied] == ["R__a_base"]
    assert await _runs(database_url) == ["a", "b", "a"]
    assert (await _repeatable_rows(database_url))["R__a_base"] == checksum(edited)
    definition = await fetch(database_url, "SELECT pg_get_viewdef('cheap_items') AS d")
    assert "< 20" in definition[0]["d"]
    assert (await migrate(database_url, migrations_dir=folder)).up_to_date


@pytest.mark.anyio
async def test_a_failing_repeatable_rolls_back_and_keeps_the_versioned_ones(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    await migrate(database_url, migrations_dir=folder)
    broken = REPEATABLE_A.replace("INSERT INTO runs", "INSERT INTO no_such_table")
    (folder / "R__a_base.sql").write_text(broken, encoding="utf-8")
    write_migrations(folder, {"003_more.sql": "ALTER TABLE items ADD COLUMN label text;"})
    with pytest.raises(MigrationFailedError) as failed:
        await migrate(database_url, migrations_dir=folder)
    assert failed.value.location == "R__a_base.sql:2:13"
    assert failed.value.version is None
    assert [result.version for result in failed.value.applied] == [3]
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2, 3]
    assert (await _repeatable_rows(database_url))["R__a_base"] == checksum(REPEATABLE_A)
    assert await _runs(database_url) == ["a", "b"]
    definition = await fetch(database_url, "SELECT pg_get_viewdef('cheap_items') AS d")
    assert "< 10" in definition[0]["d"]  # the view as the last good file made it


@pytest.mark.anyio
async def test_repeatables_run_after_a_target_version_too(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, **{"003_later.sql": "CREATE TABLE later (id int);"})
    report = await migrate(database_url, migrations_dir=folder, target=2)
    assert [result.name for result in report.applied] == [
        "001_items",
        "002_audit",
        "R__a_base",
        "R__b_views",
    ]


@pytest.mark.anyio
async def test_transaction_lock_mode_applies_repeatables_in_its_one_transaction(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    report = await migrate(database_url, migrations_dir=folder, lock_mode="transaction")
    assert [result.name for result in report.applied][2:] == ["R__a_base", "R__b_views"]
    assert set(await _repeatable_rows(database_url)) == {"R__a_base", "R__b_views"}


@pytest.mark.anyio
async def test_a_removed_repeatable_is_shown_not_fatal_and_repair_forgets_it(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    await migrate(database_url, migrations_dir=folder)
    (folder / "R__b_views.sql").unlink()
    assert (await migrate(database_url, migrations_dir=folder)).up_to_date
    plan = await status(database_url, migrations_dir=folder)
    assert {e.name: e.state for e in plan.repeatables} == {
        "R__a_base": State.APPLIED,
        "R__b_views": State.MISSING,
    }
    await repair(database_url, migrations_dir=folder)
    assert set(await _repeatable_rows(database_url)) == {"R__a_base"}


@pytest.mark.anyio
async def test_rollback_leaves_repeatables_alone(database_url: str, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    await migrate(database_url, migrations_dir=folder)
    undone = await rollback(database_url, migrations_dir=folder)
    assert [item.name for item in undone] == ["002_audit"]
    assert [row["version"] for row in await ledger_rows(database_url)] == [1]
    assert set(await _repeatable_rows(database_url)) == {"R__a_base", "R__b_views"}
    assert [tuple(row) for row in await fetch(database_url, "SELECT n FROM cheap_count")] == [(0,)]


def test_a_repeatable_with_no_transaction_a_down_file_or_a_bad_name_is_refused(
    tmp_path: Path,
) -> None:
    for name, text in (
        ("R__idx.sql", "-- natlangchain: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);"),
        ("R__views.down.sql", "DROP VIEW v;"),
        ("R__active-users.sql", "CREATE OR REPLACE VIEW v AS SELECT 1;"),
    ):
        folder = write_migrations(tmp_path / name, VERSIONED | {name: text})
        with pytest.raises(ConfigurationError) as refused:  # before it connects to host h
            asyncio.run(migrate("postgresql://u@h/x", migrations_dir=folder))
        assert refused.value.exit_code == ExitCode.USAGE
        assert str(refused.value).startswith(name), refused.value
        with pytest.raises(ConfigurationError, match=re.escape(name)):
            load_repeatables(folder)


# --- the CLI ------------------------------------------------------------------------------


def test_status_check_and_dry_run_show_a_changed_repeatable(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    flags = ("--migrations-dir", str(folder))
    asyncio.run(migrate(database_url, migrations_dir=folder))
    check = run_cli("--check", *flags, database_url=database_url)
    assert (check.returncode, check.stdout.strip()) == (
        0,
        "up to date: 2 of 2 applied, 2 of 2 repeatable current",
    )
    (folder / "R__b_views.sql").write_text(REPEATABLE_B + "-- v2\n", encoding="utf-8")

    check = run_cli("--check", "--json", *flags, database_url=database_url)
    summary = json.loads(check.stdout)
    assert check.returncode == ExitCode.CHECK_PENDING
    assert (summary["pending"], summary["pending_repeatables"]) == ([], ["R__b_views"])

    text = run_cli("--status", *flags, database_url=database_url).stdout
    assert "✓ R__a_base: APPLIED" in text
    assert "○ R__b_views: PENDING (changed since applied)" in text
    objects = json.loads(run_cli("--status", "--json", *flags, database_url=database_url).stdout)
    changed = next(o for o in objects if o["name"] == "R__b_views")
    assert changed["version"] is None
    assert changed["repeatable"] is True
    assert changed["state"] == "PENDING"
    assert changed["applied_checksum"] == checksum(REPEATABLE_B) != changed["checksum"]

    dry = run_cli("--dry-run", "--json", *flags, database_url=database_url)
    assert json.loads(dry.stdout) == [
        {"version": None, "name": "R__b_views", "file": "R__b_views.sql"}
    ]
    assert asyncio.run(_runs(database_url)) == ["a", "b"]


def test_new_repeatable_writes_an_r_file_that_the_runner_applies(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", VERSIONED)
    result = run_cli(
        "new", "--repeatable", "item_views", "--migrations-dir", str(folder), database_url=None
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(folder / "R__item_views.sql")
    again = run_cli(
        "new", "--repeatable", "item_views", "--migrations-dir", str(folder), database_url=None
    )
    assert again.returncode == ExitCode.USAGE
    assert "already exists" in again.stderr
    asyncio.run(migrate(database_url, migrations_dir=folder))
    assert set(asyncio.run(_repeatable_rows(database_url))) == {"R__item_views"}


@pytest.mark.system
@pytest.mark.slow
def test_eight_processes_apply_a_changed_repeatable_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    asyncio.run(migrate(database_url, migrations_dir=folder))
    (folder / "R__b_views.sql").write_text(REPEATABLE_B + "-- v2\n", encoding="utf-8")
    runners = [
        start_cli("--migrations-dir", str(folder), database_url=database_url) for _ in range(8)
    ]
    outputs = [runner.communicate(timeout=180) for runner in runners]
    assert [runner.returncode for runner in runners] == [0] * 8, outputs[0][1][-500:]
    events = [event for _, err in outputs for event in log_events(err)]
    applied = [e["name"] for e in events if e["event"] == "migration_applied"]
    assert applied == ["R__b_views"]
    assert asyncio.run(_runs(database_url)) == ["a", "b", "b"]
    assert asyncio.run(migration_locks_held(database_url)) == 0


def test_new_repeatable_keeps_an_existing_manifest_current(tmp_path: Path) -> None:
    from natlangchain_migrate.manifest import write_manifest

    folder = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    write_manifest(folder)
    made = run_cli(
        "new", "--repeatable", "a_view", "--migrations-dir", str(folder), database_url=None
    )
    assert made.returncode == 0, made.stderr
    check = run_cli("sum", "--check", "--migrations-dir", str(folder), database_url=None)
    assert check.returncode == 0, check.stdout
