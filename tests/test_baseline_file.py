"""Baseline files (``NNN_name.baseline.sql``): a new database applies the newest one in
place of the versions it covers, then the versions above it; a database with any
versioned row ignores it; status, drift, rollback and the manifest after it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.servers.pgcluster import PASSWORD
from natlangchain_migrate.errors import ExitCode
from tests.conftest import fetchval, ledger_rows, log_events, run_cli, table_names, write_migrations

# Each versioned file leaves a trace in ran (which file ran), and is not idempotent.
HISTORY = {
    "001_items.sql": "CREATE TABLE ran (file text);\nINSERT INTO ran VALUES ('001');\n"
    "CREATE TABLE items (id serial PRIMARY KEY, name text);\n",
    "001_items.down.sql": "DROP TABLE items;\nDROP TABLE ran;\n",
    "002_tags.sql": "INSERT INTO ran VALUES ('002');\n"
    "CREATE TABLE tags (id int PRIMARY KEY, item int REFERENCES items);\n",
    "002_tags.down.sql": "DROP TABLE tags;\n",
    "003_index.sql": "INSERT INTO ran VALUES ('003');\nCREATE INDEX tags_item ON tags (item);\n",
    "003_index.down.sql": "DROP INDEX tags_item;\n",
}
# What 001-003 leave, as a baseline file says it (no row in ran: the files did not run).
BASELINE = (
    "CREATE TABLE ran (file text);\n"
    "CREATE TABLE items (id serial PRIMARY KEY, name text);\n"
    "CREATE TABLE tags (id int PRIMARY KEY, item int REFERENCES items);\n"
    "CREATE INDEX tags_item ON tags (item);\n"
)
ABOVE = {
    "004_notes.sql": "INSERT INTO ran VALUES ('004');\nCREATE TABLE notes (body text);\n",
    "004_notes.down.sql": "DROP TABLE notes;\n",
}


def _cli(folder: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("--migrations-dir", str(folder), *args, database_url=url)
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _ran(url: str) -> list[str]:
    return list(asyncio.run(fetchval(url, "SELECT array_agg(file ORDER BY file) FROM ran")) or [])


def _rows(url: str) -> list[tuple[int, str, str]]:
    return [
        (int(r["version"]), r["name"], r["applied_by"]) for r in asyncio.run(ledger_rows(url))
    ]


def _folder(tmp_path: Path, *, squash: bool = False, above: bool = True) -> Path:
    files = {} if squash else dict(HISTORY)
    files["003_schema.baseline.sql"] = BASELINE
    if above:
        files |= ABOVE
    return write_migrations(tmp_path / "migrations", files)


def test_a_new_database_applies_the_baseline_instead_of_the_versions_it_covers(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    result = _cli(folder, database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert _ran(database_url) == ["004"]  # 001-003 did not run; 004 did
    assert {"items", "tags", "notes"} <= asyncio.run(table_names(database_url))
    rows = _rows(database_url)
    assert [(v, name) for v, name, _ in rows] == [
        (1, "001_items"),
        (2, "002_tags"),
        (3, "003_index"),
        (4, "004_notes"),
    ]
    assert {by for v, _, by in rows if v <= 3} == {"baseline-file:003"}
    applying = [e for e in log_events(result.stderr) if e["event"] == "migration_applying"]
    assert [e["name"] for e in applying] == ["003_schema.baseline", "004_notes"]
    again = _cli(folder, database_url, "--check")
    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
