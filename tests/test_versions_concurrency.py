"""Sixteen processes meeting the seed's integer ledger at once, one of them an older release
(this package at commit e20be2a, which refuses timestamp files, run with the older folder):
the column is widened once, under the lock, to bigint, and every migration is applied
exactly once. The older release either applies 002 and 003 itself or finds them applied
(exit 0), or, once the timestamp row is there, stops with drift (exit 5): it predates
future rows and reads one as a migration whose file is gone. It never writes a wrong row."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from harness.servers.sql import execute
from tests.conftest import (
    fetchval,
    ledger_rows,
    log_events,
    migration_locks_held,
    start_cli,
    write_migrations,
)

RUNNERS = 16
OLD_RELEASE = "e20be2a"
NUMBERED = {
    "001_a.sql": "CREATE TABLE a (id int);",
    "002_b.sql": "CREATE TABLE b (id int);",
    "003_c.sql": "CREATE TABLE c (id int);",
}
SEED_LEDGER = (
    "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name varchar(255) NOT NULL, "
    "applied_at timestamptz DEFAULT CURRENT_TIMESTAMP); CREATE TABLE a (id int); "
    "INSERT INTO schema_migrations (version, name) VALUES (1, '001_a');"
)


def _old_release(into: Path) -> Path:
    """The package as it was at OLD_RELEASE, importable from ``into`` (same dependencies)."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", OLD_RELEASE, "natlangchain_migrate"],
        capture_output=True,
        check=True,
    )
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _runner(url: str, folder: Path, pythonpath: Path | None) -> subprocess.Popen[str]:
    env = {} if pythonpath is None else {"PYTHONPATH": str(pythonpath)}
    return start_cli("--migrations-dir", str(folder), database_url=url, env=env, cwd=folder)


@pytest.mark.slow
def test_sixteen_runners_one_of_them_older_widen_the_column_once(
    database_url: str, tmp_path: Path
) -> None:
    try:
        old = _old_release(tmp_path / "old")
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip(f"commit {OLD_RELEASE} is not in this checkout")
    asyncio.run(execute(database_url, SEED_LEDGER))
    new_folder = write_migrations(
        tmp_path / "new", NUMBERED | {"20240101120000_d.sql": "CREATE TABLE d (id int);"}
    )
    (new_folder / "natlangchain-migrate.toml").write_text("mixed-versions = true\n")
    old_folder = write_migrations(tmp_path / "old_files", NUMBERED)
    runners = [_runner(database_url, new_folder, None) for _ in range(RUNNERS - 1)]
    runners.insert(RUNNERS // 2, _runner(database_url, old_folder, old))
    outputs = [runner.communicate(timeout=180) for runner in runners]
    codes = [runner.returncode for runner in runners]
    old_code, old_err = codes[RUNNERS // 2], outputs[RUNNERS // 2][1]
    failed = [
        err
        for index, (code, (_, err)) in enumerate(zip(codes, outputs, strict=True))
        if code and index != RUNNERS // 2
    ]
    assert not failed, failed[0][-800:]
    # The older release predates future rows: once the timestamp row is there it reads it
    # as applied with its file gone (drift, exit 5) and changes nothing; before, exit 0.
    assert old_code in (0, 5), old_err[-800:]
    if old_code == 5:
        assert "20240101120000" in old_err
    events = [event for _, err in outputs for event in log_events(err)]
    applied = sorted(e["version"] for e in events if e["event"] == "migration_applied")
    assert applied == [2, 3, 20240101120000]
    widened = [e for e in events if "version" in e.get("columns_added", ())]
    assert len(widened) == 1
    rows = asyncio.run(ledger_rows(database_url))
    assert [int(row["version"]) for row in rows] == [1, 2, 3, 20240101120000]
    kind = asyncio.run(
        fetchval(
            database_url,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'schema_migrations'::regclass AND attname = 'version'",
        )
    )
    assert kind == "bigint"
    assert asyncio.run(migration_locks_held(database_url)) == 0
