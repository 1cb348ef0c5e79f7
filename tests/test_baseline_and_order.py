"""``baseline N`` (adopting a database built without the runner) and strict order, against a
real PostgreSQL: the library in process, the CLI for its flags, output and exit codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harness.servers.sql import execute
from natlangchain_migrate import OutOfOrderError, baseline, migrate
from natlangchain_migrate.discovery import checksum
from natlangchain_migrate.errors import ExitCode
from tests.conftest import ledger_rows, log_events, run_cli, table_names, write_migrations

FILES = {
    "001_users.sql": "CREATE TABLE users (id int PRIMARY KEY);",
    "002_orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users);",
    "003_notes.sql": "CREATE TABLE notes (id int PRIMARY KEY);",
}


def _versions(url: str) -> list[int]:
    return [row["version"] for row in asyncio.run(ledger_rows(url))]


def _error(result_stderr: str) -> str:
    (failed,) = [e for e in log_events(result_stderr) if e["event"] == "run_failed"]
    return str(failed["error"])


# --- baseline ---------------------------------------------------------------------------


def test_baseline_records_without_running_and_the_next_run_applies_the_rest(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    # Built by hand (or by another tool): 001 and 002's tables, no ledger.
    asyncio.run(execute(database_url, FILES["001_users.sql"] + FILES["002_orders.sql"]))
    flags = ("--migrations-dir", str(folder))
    assert asyncio.run(baseline(2, database_url, migrations_dir=folder)) == [1, 2]
    rows = asyncio.run(ledger_rows(database_url))
    assert [(r["version"], r["applied_by"], r["execution_ms"]) for r in rows] == [
        (1, "baseline", None),
        (2, "baseline", None),
    ]
    assert rows[1]["checksum"] == checksum(FILES["002_orders.sql"])
    status = run_cli("--status", *flags, database_url=database_url).stdout
    assert "✓ 001_users: APPLIED (baseline)" in status
    assert "○ 003_notes: PENDING" in status
    # 001 again would fail: 42P07
    assert asyncio.run(migrate(database_url, migrations_dir=folder)).applied
    assert _versions(database_url) == [1, 2, 3]
    assert "notes" in asyncio.run(table_names(database_url))


def test_baseline_refuses_a_ledger_with_rows_unless_forced(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    flags = ("--migrations-dir", str(folder))
    asyncio.run(migrate(database_url, migrations_dir=folder, target=1))
    refused = run_cli("baseline", "2", *flags, database_url=database_url)
    assert refused.returncode == 24
    assert "already holds 1 row(s)" in _error(refused.stderr)
    assert "baseline 2 --force" in _error(refused.stderr)
    events = [e["event"] for e in log_events(refused.stderr)]
    assert events.index("lock_acquired") < events.index("lock_released")
    assert _versions(database_url) == [1]
    forced = run_cli("baseline", "2", "--force", *flags, database_url=database_url)
    assert forced.returncode == 0, forced.stderr
    (recorded,) = [e for e in log_events(forced.stderr) if e["event"] == "baseline_recorded"]
    assert (recorded["versions"], recorded["kept"]) == ([2], [1])
    rows = asyncio.run(ledger_rows(database_url))
    assert [(r["version"], r["applied_by"] == "baseline") for r in rows] == [
        (1, False),  # the row a real run wrote is kept
        (2, True),
    ]


@pytest.mark.parametrize(("n", "words"), [("0", "from 1 to 3"), ("4", "from 1 to 3")])
def test_baseline_outside_the_files_versions_is_a_usage_error(
    database_url: str, tmp_path: Path, n: str, words: str
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli("baseline", n, "--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE
    assert _error(result.stderr).startswith(f"baseline {n}: N must be a version {words}")
    assert "schema_migrations" not in asyncio.run(table_names(database_url))


@pytest.mark.anyio
async def test_baseline_in_the_library_returns_the_versions_it_recorded(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    assert await baseline(3, database_url, migrations_dir=folder) == [1, 2, 3]
    assert (await migrate(database_url, migrations_dir=folder)).up_to_date


# --- strict order -----------------------------------------------------------------------


def _skip_two(database_url: str, folder: Path) -> None:
    """001 and 003 applied, 002 left out: 002 is now out of order."""
    asyncio.run(migrate(database_url, migrations_dir=folder, skip=[2]))
    assert _versions(database_url) == [1, 3]


@pytest.mark.parametrize(
    ("flags", "env"),
    [(("--strict-order",), {}), ((), {"NATLANGCHAIN_MIGRATE_STRICT_ORDER": "1"})],
    ids=["flag", "variable"],
)
def test_strict_order_refuses_a_version_below_the_highest_applied(
    database_url: str, tmp_path: Path, flags: tuple[str, ...], env: dict[str, str]
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    _skip_two(database_url, folder)
    result = run_cli(*flags, "--migrations-dir", str(folder), database_url=database_url, env=env)
    assert result.returncode == 23
    error = _error(result.stderr)
    assert error.startswith("002_orders.sql is pending but version 3 is already applied")
    assert "lock_acquired" not in [e["event"] for e in log_events(result.stderr)]
    assert _versions(database_url) == [1, 3]
    assert "orders" not in asyncio.run(table_names(database_url))


def test_without_strict_order_an_out_of_order_version_is_applied_and_logged(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    _skip_two(database_url, folder)
    with capture_logs() as events:
        asyncio.run(migrate(database_url, migrations_dir=folder))
    (warning,) = [e for e in events if e["event"] == "applying_out_of_order"]
    assert warning["versions"] == [2]
    assert _versions(database_url) == [1, 2, 3]


@pytest.mark.anyio
async def test_strict_order_in_order_applies_and_in_the_library_raises(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    report = await migrate(database_url, migrations_dir=folder, strict_order=True, target=1)
    assert [result.version for result in report.applied] == [1]
    await migrate(database_url, migrations_dir=folder, skip=[2])
    with capture_logs() as events, pytest.raises(OutOfOrderError, match=r"002_orders\.sql"):
        await migrate(database_url, migrations_dir=folder, strict_order=True)
    assert "lock_acquired" not in [event["event"] for event in events]


def test_a_bad_strict_order_variable_is_a_usage_error(database_url: str) -> None:
    result = run_cli(database_url=database_url, env={"NATLANGCHAIN_MIGRATE_STRICT_ORDER": "maybe"})
    assert result.returncode == ExitCode.USAGE
    assert "NATLANGCHAIN_MIGRATE_STRICT_ORDER='maybe'" in result.stderr
    assert (
        "--strict-order does not go with --status"
        in run_cli("--status", "--strict-order", database_url=database_url).stderr
    )


@pytest.mark.parametrize("strict", [True, False], ids=["strict-order", "default"])
def test_a_new_or_changed_repeatable_is_never_out_of_order(
    database_url: str, tmp_path: Path, strict: bool
) -> None:
    """A repeatable has no version: strict order neither refuses it nor warns about it."""
    folder = write_migrations(tmp_path / "m", FILES)
    asyncio.run(migrate(database_url, migrations_dir=folder))
    write_migrations(
        folder, {"R__notes_view.sql": "CREATE VIEW notes_view AS SELECT id FROM notes;"}
    )
    with capture_logs() as logged:
        asyncio.run(migrate(database_url, migrations_dir=folder, strict_order=strict))
    events = [e["event"] for e in logged]
    assert "applying_out_of_order" not in events
    assert "notes_view" in str(logged)
