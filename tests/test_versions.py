"""Timestamp and 20-digit versions through every command, the seed's integer column widened
in place, mixed folders refused, and ``new`` continuing the folder's style."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.servers.sql import execute
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import ConfigurationError, ExitCode
from natlangchain_migrate.scaffold import new_migration
from natlangchain_migrate.versions import check_styles, next_version
from tests.conftest import fetchval, ledger_rows, run_cli, table_names, write_migrations

STAMPED = {
    "20240101120000_users.sql": "CREATE TABLE users (id int PRIMARY KEY);",
    "20240101120000_users.down.sql": "DROP TABLE users;",
    "20240215093000_orders.sql": "CREATE TABLE orders (id int PRIMARY KEY);",
    "20240215093000_orders.down.sql": "DROP TABLE orders;",
    "20241231235959_notes.sql": "CREATE TABLE notes (id int PRIMARY KEY);",
    "20241231235959_notes.down.sql": "DROP TABLE notes;",
}
# gobuffalo/pop's style: 20 digits, above bigint's 9223372036854775807.
POP = {
    "20150100000001000000_networks.sql": "CREATE TABLE networks (id int PRIMARY KEY);",
    "20150100000001000000_networks.down.sql": "DROP TABLE networks;",
    "20150100000002000000_hosts.sql": "CREATE TABLE hosts (id int PRIMARY KEY);",
    "20150100000002000000_hosts.down.sql": "DROP TABLE hosts;",
    "20150100000003000000_ports.sql": "CREATE TABLE ports (id int PRIMARY KEY);",
    "20150100000003000000_ports.down.sql": "DROP TABLE ports;",
}


def _versions(url: str) -> list[int]:
    return [int(row["version"]) for row in asyncio.run(ledger_rows(url))]


def _column_type(url: str, table: str = "schema_migrations") -> str:
    return str(
        asyncio.run(
            fetchval(
                url,
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                f"WHERE attrelid = '{table}'::regclass AND attname = 'version'",
            )
        )
    )


@pytest.mark.parametrize("files", [STAMPED, POP], ids=["timestamp", "twenty-digit"])
def test_every_command_handles_long_versions(
    database_url: str, tmp_path: Path, files: dict[str, str]
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    v1, v2, v3 = sorted({int(name.split("_", 1)[0]) for name in files})
    flags = ("--migrations-dir", str(folder))
    # --version and --skip
    up = run_cli("--version", str(v2), "--skip", str(v1), *flags, database_url=database_url)
    assert up.returncode == 0, up.stderr
    assert _versions(database_url) == [v2]
    assert _column_type(database_url) == ("bigint" if files is STAMPED else "numeric(38,0)")
    status = run_cli("--status", "--json", *flags, database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert str(v1) in status.stdout
    assert str(v3) in status.stdout
    json.loads(status.stdout)
    check = run_cli("--check", *flags, database_url=database_url)
    assert check.returncode == ExitCode.CHECK_PENDING, check.stderr
    # strict order refuses v1 (below v2), by number
    strict = run_cli("--strict-order", *flags, database_url=database_url)
    assert strict.returncode != 0
    assert str(v1) in strict.stderr
    assert run_cli(*flags, database_url=database_url).returncode == 0
    assert _versions(database_url) == [v1, v2, v3]
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    # repair after an edit, manifest (sum) over the folder
    newest = max(name for name in files if not name.endswith(".down.sql"))
    (folder / newest).write_text(files[newest] + "\n-- edited\n")
    assert run_cli("--check", *flags, database_url=database_url).returncode == ExitCode.CHECK_DRIFT
    repaired = run_cli("--repair", *flags, database_url=database_url)
    assert repaired.returncode == 0, repaired.stderr
    summed = run_cli("sum", *flags, database_url=None)
    assert summed.returncode == 0, summed.stderr
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    # rollback --to
    back = run_cli("--rollback", "--to", str(v1), *flags, database_url=database_url)
    assert back.returncode == 0, back.stderr
    assert _versions(database_url) == [v1]
    assert len(asyncio.run(table_names(database_url))) == 2  # the ledger and v1's table


def test_baseline_takes_a_timestamp_version(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", POP)
    asyncio.run(execute(database_url, POP["20150100000001000000_networks.sql"]))
    flags = ("--migrations-dir", str(folder))
    result = run_cli("baseline", "20150100000001000000", *flags, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert run_cli(*flags, database_url=database_url).returncode == 0
    assert _versions(database_url) == sorted(int(n.split("_")[0]) for n in POP if "down" not in n)


def test_the_seeds_integer_column_is_widened_in_place_keeping_its_rows(
    database_url: str, tmp_path: Path
) -> None:
    numbered = {"001_a.sql": "CREATE TABLE a (id int);", "002_b.sql": "CREATE TABLE b (id int);"}
    folder = write_migrations(tmp_path / "m", numbered)
    flags = ("--migrations-dir", str(folder))
    assert run_cli(*flags, database_url=database_url).returncode == 0
    assert _column_type(database_url) == "integer"  # nothing needs more: left alone
    (folder / "natlangchain-migrate.toml").write_text("mixed-versions = true\n")
    (folder / "20240101120000_c.sql").write_text("CREATE TABLE c (id int);")
    result = run_cli(*flags, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert _column_type(database_url) == "bigint"
    assert _versions(database_url) == [1, 2, 20240101120000]
    (folder / "20150100000001000000_pop.sql").write_text("CREATE TABLE pop (id int);")
    assert run_cli(*flags, database_url=database_url).returncode == 0
    assert _column_type(database_url) == "numeric(38,0)"
    rows = asyncio.run(ledger_rows(database_url))
    assert all(row["checksum"] for row in rows)


def test_a_folder_mixing_numbered_and_timestamp_versions_is_refused_unless_told(
    tmp_path: Path,
) -> None:
    folder = write_migrations(
        tmp_path / "m", {"001_a.sql": "SELECT 1;", "20240101120000_b.sql": "SELECT 2;"}
    )
    with pytest.raises(ConfigurationError, match=r"001_a\.sql is numbered and 20240101120000"):
        load_migrations(folder)
    (folder / "natlangchain-migrate.toml").write_text("mixed-versions = true\n")
    assert [m.version for m in load_migrations(folder)] == [1, 20240101120000]
    (folder / "natlangchain-migrate.toml").write_text("mixed-version = true\n")
    with pytest.raises(ConfigurationError, match="unknown key 'mixed-version'"):
        load_migrations(folder)


def test_versions_compare_as_numbers() -> None:
    check_styles({999: "999_a.sql", 1000: "1000_b.sql"}, mixed_allowed=False)
    assert sorted([20240101120000, 999, 20150100000001000000]) == [
        999,
        20240101120000,
        20150100000001000000,
    ]


def test_new_continues_the_folders_style(tmp_path: Path) -> None:
    numbered = write_migrations(tmp_path / "n", {"007_a.sql": "SELECT 1;"})
    assert new_migration(numbered, "b")[0].name == "008_b.sql"
    stamped = write_migrations(tmp_path / "s", {"20200101000000_a.sql": "SELECT 1;"})
    made = new_migration(stamped, "b")[0].name
    assert made[:8] == datetime.now(UTC).strftime("%Y%m%d")
    assert len(made.split("_")[0]) == 14
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert next_version([20150100000001000000], 20, now) == 20260102030405000000
    assert next_version([20990101000000], 14, now) == 20990101000001  # never below the newest
    # Unix time goes on as Unix time: node-pg-migrate's milliseconds, golang-migrate's
    # unixNano (a calendar stamp, 20260102030405, sorted above what those tools write next).
    epoch = int(now.timestamp())
    assert next_version([1700000000000], 13, now) == epoch * 1000
    assert next_version([1700000000000000000], 19, now) == epoch * 10**9
    assert next_version([4200000000000], 13, now) == 20260102030405  # past 2100: not Unix time
