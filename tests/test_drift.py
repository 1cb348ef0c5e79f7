"""Drift: edited or vanished applied files are caught before anything runs; --repair accepts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import DriftError, migrate, repair, run_migrations, status
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.plan import State
from tests.conftest import ledger_rows, log_events, run_cli, write_migrations

FILES = {
    "001_people.sql": (
        "CREATE TABLE people (id int PRIMARY KEY);\nCREATE INDEX people_id ON people (id);\n"
    ),
    "002_pets.sql": "CREATE TABLE pets (id int);\n",
}
# A file that vanished is drift below the newest file (above it, a newer release's row).
WITH_NEWER = FILES | {"003_toys.sql": "CREATE TABLE toys (id int);\n"}


def _apply(folder: Path, url: str, *args: str) -> tuple[int, str, str]:
    result = run_cli("--migrations-dir", str(folder), *args, database_url=url)
    return result.returncode, result.stdout, result.stderr


def _run_failed(stderr: str) -> str:
    return str(next(e for e in log_events(stderr) if e["event"] == "run_failed")["error"])


@pytest.mark.anyio
async def test_edited_applied_file_is_refused_then_accepted_by_repair(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    await migrate(database_url, migrations_dir=folder)
    (folder / "001_people.sql").write_text(FILES["001_people.sql"] + "-- tweaked\n")
    (folder / "003_more.sql").write_text("CREATE TABLE more (id int);\n")
    with pytest.raises(DriftError) as drift:
        await migrate(database_url, migrations_dir=folder)
    assert drift.value.exit_code == ExitCode.DRIFT
    error = str(drift.value)
    assert "migration 001 was applied with a different checksum" in error
    assert "001_people.sql" in error
    assert "--repair" in error
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2]
    plan = await status(database_url, migrations_dir=folder)
    assert [(e.name, e.state) for e in plan.changed] == [("001_people", State.CHANGED)]

    with capture_logs() as events:
        await repair(database_url, migrations_dir=folder)
    repaired = [e for e in events if e["event"] == "checksum_repaired"]
    assert [(e["version"], e["old_checksum"] != e["new_checksum"]) for e in repaired] == [(1, True)]
    await migrate(database_url, migrations_dir=folder)
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2, 3]


def test_drift_exits_5_and_status_and_check_show_it(database_url: str, tmp_path: Path) -> None:
    """The CLI's side of drift: exit 5 naming both problems, ✗ in --status, --check 11."""
    folder = write_migrations(tmp_path / "m", WITH_NEWER)
    run_migrations(database_url, migrations_dir=folder)
    (folder / "001_people.sql").write_text(FILES["001_people.sql"] + "-- tweaked\n")
    (folder / "002_pets.sql").unlink()
    code, _, stderr = _apply(folder, database_url)
    assert code == ExitCode.DRIFT
    assert "migration 001 was applied with a different checksum" in _run_failed(stderr)
    assert "migration 002 (002_pets) is applied but its file is gone" in _run_failed(stderr)
    status_text = _apply(folder, database_url, "--status")[1]
    assert "✗ 001_people: CHANGED" in status_text
    assert "✗ 002_pets: MISSING" in status_text
    assert _apply(folder, database_url, "--check")[0] == ExitCode.CHECK_DRIFT


@pytest.mark.anyio
async def test_crlf_and_trailing_blanks_are_not_drift(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    await migrate(database_url, migrations_dir=folder)
    original = FILES["001_people.sql"]
    (folder / "001_people.sql").write_bytes(original.replace("\n", "  \r\n").encode() + b"\r\n\r\n")
    await migrate(database_url, migrations_dir=folder)
    plan = await status(database_url, migrations_dir=folder)
    assert [e.state for e in plan.entries] == [State.APPLIED, State.APPLIED]  # --check: 0


@pytest.mark.anyio
async def test_vanished_applied_file_is_an_error_and_marked_missing(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", WITH_NEWER)
    await migrate(database_url, migrations_dir=folder)
    (folder / "002_pets.sql").unlink()
    with pytest.raises(DriftError) as drift:
        await migrate(database_url, migrations_dir=folder)
    assert drift.value.exit_code == ExitCode.DRIFT
    assert "migration 002 (002_pets) is applied but its file is gone" in str(drift.value)
    plan = await status(database_url, migrations_dir=folder)
    assert [(e.name, e.state) for e in plan.missing] == [("002_pets", State.MISSING)]


def test_repair_fills_checksums_of_rows_adopted_from_the_seed(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)

    async def seed() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                FILES["001_people.sql"]
                + "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " name VARCHAR(255) NOT NULL, applied_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP);"
                "INSERT INTO schema_migrations (version, name) VALUES (1, '001_people');"
            )
        finally:
            await conn.close()

    asyncio.run(seed())
    assert "(unverified" in _apply(folder, database_url, "--status")[1]
    code, _, stderr = _apply(folder, database_url, "--repair")
    assert code == 0, stderr
    rows = asyncio.run(ledger_rows(database_url))
    assert rows[0]["checksum"] is not None
    assert "(unverified" not in _apply(folder, database_url, "--status")[1]


def test_check_exit_codes_and_status_json(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    code, stdout, _ = _apply(folder, database_url, "--check")
    assert code == ExitCode.CHECK_PENDING
    assert stdout.strip() == "2 pending: 0 of 2 applied"
    run_migrations(database_url, migrations_dir=folder, target=1)
    code, stdout, _ = _apply(folder, database_url, "--status", "--json")
    assert code == 0
    objects = json.loads(stdout)
    assert [(o["version"], o["name"], o["state"]) for o in objects] == [
        (1, "001_people", "APPLIED"),
        (2, "002_pets", "PENDING"),
    ]
    assert objects[0]["checksum"] == objects[0]["applied_checksum"]
    assert objects[0]["applied_at"]
    assert objects[0]["execution_ms"] > 0
    run_migrations(database_url, migrations_dir=folder)
    assert _apply(folder, database_url, "--check")[0] == 0
    dry = json.loads(_apply(folder, database_url, "--dry-run", "--json")[1])
    assert dry == []


@pytest.mark.parametrize("file", ["001_people.up.sql", "20240101120000_people/migration.sql"])
def test_an_edited_file_of_another_tools_layout_is_named_as_it_is_in_the_folder(
    database_url: str, tmp_path: Path, file: str
) -> None:
    """The advice said "restore 001_people.sql", a file that never was (name + .sql)."""
    folder = write_migrations(tmp_path / "m", {file: "CREATE TABLE people (id int);\n"})
    assert _apply(folder, database_url)[0] == 0
    (folder / file).write_text("CREATE TABLE people (id bigint);\n")
    code, _, stderr = _apply(folder, database_url)
    assert code == ExitCode.DRIFT
    assert f"was applied with a different checksum; restore {file}," in _run_failed(stderr)


def test_prisma_folders_sharing_a_timestamp_after_one_was_applied_here(
    database_url: str, tmp_path: Path
) -> None:
    """This runner applied 20240101120000_b, then 20240101120000_a came in (sorting first).
    The refusal said only "rename _b": done, _a took _b's version and the run stopped on a
    checksum, telling to restore _a. Now it says which to rename when _b is applied here,
    and the drift says what was applied under that version."""
    folder = write_migrations(
        tmp_path / "m", {"20240101120000_b/migration.sql": "CREATE TABLE b (id int);\n"}
    )
    assert _apply(folder, database_url)[0] == 0
    write_migrations(folder, {"20240101120000_a/migration.sql": "CREATE TABLE a (id int);\n"})
    code, _, stderr = _apply(folder, database_url)
    assert code == ExitCode.USAGE
    said = _run_failed(stderr)
    assert "(if this runner applied 20240101120000_b already, rename 20240101120000_a to " in said
    assert "20240101120001_a instead)" in said

    (folder / "20240101120000_b").rename(folder / "20240101120001_b")  # the first advice
    code, _, stderr = _apply(folder, database_url)
    assert code == ExitCode.DRIFT
    assert (
        "migration 20240101120000 was applied as 20240101120000_b, and "
        "20240101120000_a/migration.sql has that version here with other contents: if "
        "20240101120000_b was renamed (to another version), give it its name back"
    ) in _run_failed(stderr)

    (folder / "20240101120001_b").rename(folder / "20240101120000_b")
    (folder / "20240101120000_a").rename(folder / "20240101120001_a")  # the second advice
    assert _apply(folder, database_url)[0] == 0
    assert [r["name"] for r in asyncio.run(ledger_rows(database_url))] == [
        "20240101120000_b",
        "20240101120001_a",
    ]


STAMP = "20240101000002"
NODE_UP = "-- Up Migration\n"


def _three(pattern: str) -> list[str]:
    return [pattern.format(n=n, x=x) for n, x in ((1, "a"), (2, "b"), (3, "c"))]


@pytest.mark.parametrize(
    ("layout", "files", "gone", "head"),
    [
        ("golang-migrate", _three("{n}_{x}.up.sql"), "2_b.up.sql", ""),
        ("prisma", _three("2024010100000{n}_{x}/migration.sql"), f"{STAMP}_b/migration.sql", ""),
        ("natlangchain", _three("00{n}_{x}.sql"), "002_b.sql", ""),
        ("sqlx", _three("{n}_{x}.up.sql"), "2_b.up.sql", ""),  # sqlx migrate add -r
        ("sqlx", _three("{n}_{x}.sql"), "2_b.sql", ""),  # sqlx migrate add
        ("goose", _three("0000{n}_{x}.sql"), "00002_b.sql", "-- +goose Up\n"),
        ("dbmate", _three("2024010100000{n}_{x}.sql"), f"{STAMP}_b.sql", "-- migrate:up\n"),
        ("node-pg-migrate", _three("170000000000{n}_{x}.sql"), "1700000000002_b.sql", NODE_UP),
        ("flyway", _three("V{n}__{x}.sql"), "V2__b.sql", ""),
    ],
    ids=[
        "golang-migrate", "prisma", "ours", "sqlx-reversible", "sqlx-simple", "goose", "dbmate",
        "node-pg-migrate", "flyway",
    ],
)  # fmt: skip
def test_a_vanished_file_is_named_as_the_folders_layout_names_it(
    database_url: str, tmp_path: Path, layout: str, files: list[str], gone: str, head: str
) -> None:
    """It said "restore 2_b.sql" in a golang-migrate folder, and in a folder of sqlx's
    reversible migrations, whose file was 2_b.up.sql."""
    folder = write_migrations(
        tmp_path / "m",
        {f: f"{head}CREATE TABLE t{i} (id int);\n" for i, f in enumerate(files)}
        | {"natlangchain-migrate.toml": f'layout = "{layout}"\n'},
    )
    assert _apply(folder, database_url)[0] == 0
    (folder / gone).unlink()
    code, _, stderr = _apply(folder, database_url)
    assert code == ExitCode.DRIFT
    assert f"is applied but its file is gone; restore {gone}, or," in _run_failed(stderr)
