"""The generated history is realistic and sound: psql applies every up file, and the down
files undo them one by one back to an empty schema."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pglast
import pytest
from pglast import ast

from harness.faults.history import NO_TRANSACTION_HEADER, down_file, write_history
from harness.faults.trials import fresh_database, schema_dump
from harness.servers.pgcluster import embedded_bindir
from natlangchain_migrate.discovery import load_migrations

FILE_NAME = re.compile(r"^\d{3,}_[a-z0-9_]+(\.down)?\.sql$")
KINDS = {
    "create_table", "add_index", "touch_trigger", "audit_trigger", "add_functions",
    "partitions_do", "create_views", "create_matview", "create_enum", "add_enum_value",
    "rename_columns", "backfill", "add_column_backfill", "add_constraints", "add_foreign_key",
}  # fmt: skip
CHECKPOINT_EVERY = 10


def _statements(path: Path) -> list[ast.RawStmt]:
    return list(pglast.parse_sql(path.read_text()))


def _kind(path: Path) -> str:
    return re.sub(r"^\d+_|_\d+(\.down)?\.sql$", "", path.name)


def test_same_seed_writes_the_same_files_and_another_seed_other_ones(tmp_path: Path) -> None:
    first = write_history(tmp_path / "a", 80, seed=3)
    again = write_history(tmp_path / "b", 80, seed=3)
    other = write_history(tmp_path / "c", 80, seed=4)
    assert [p.read_text() for p in first] == [p.read_text() for p in again]
    assert [p.read_text() for p in first] != [p.read_text() for p in other]


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transaction", "no-transaction"])
def test_files_look_like_a_mature_projects_and_none_is_idempotent(
    tmp_path: Path, no_transaction: bool
) -> None:
    ups = write_history(tmp_path, 400, no_transaction=no_transaction)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 800
    assert all(FILE_NAME.match(path.name) for path in files)
    assert {_kind(path) for path in ups} == KINDS
    assert all(down_file(up).exists() for up in ups)
    for path in files:
        text = path.read_text()
        assert not re.search(r"if (not )?exists|or replace", text, re.I), path.name
        assert text.startswith(NO_TRANSACTION_HEADER) == no_transaction, path.name
        if not no_transaction:
            assert not re.search(r"concurrently|vacuum", text, re.I), path.name
            assert not any(isinstance(s.stmt, ast.TransactionStmt) for s in _statements(path))
    for up in ups:
        statements = _statements(up)
        assert 3 <= len(statements) <= 15, up.name
        indexes = [s.stmt for s in statements if isinstance(s.stmt, ast.IndexStmt)]
        assert all(bool(index.concurrent) == no_transaction for index in indexes), up.name
    if no_transaction:
        drops = [s.stmt for p in files for s in _statements(p) if isinstance(s.stmt, ast.DropStmt)]
        index_drops = [d for d in drops if d.removeType == pglast.enums.ObjectType.OBJECT_INDEX]
        assert index_drops
        assert all(drop.concurrent for drop in index_drops)
    migrations = load_migrations(tmp_path)
    assert [m.version for m in migrations] == list(range(1, 401))
    assert all(m.directives.no_transaction == no_transaction for m in migrations)


def _psql(url: str, path: Path, *, one_transaction: bool) -> None:
    args = [str(embedded_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
    done = subprocess.run(
        [*args, *(["-1"] if one_transaction else []), "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, f"{path.name}: {done.stderr}"


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transaction", "no-transaction"])
def test_psql_applies_every_file_and_each_down_file_undoes_its_migration(
    admin_url: str, database_url: str, tmp_path: Path, no_transaction: bool
) -> None:
    ups = write_history(tmp_path, 60, no_transaction=no_transaction, seed=5)
    with fresh_database(admin_url, "empty") as empty_url:
        checkpoints = {0: schema_dump(empty_url)}
    for version, up in enumerate(ups, start=1):
        _psql(database_url, up, one_transaction=not no_transaction)
        if version % CHECKPOINT_EVERY == 0:
            checkpoints[version] = schema_dump(database_url)
    for version, up in reversed(list(enumerate(ups, start=1))):
        _psql(database_url, down_file(up), one_transaction=not no_transaction)
        if version - 1 in checkpoints:
            assert schema_dump(database_url) == checkpoints[version - 1], (
                f"undoing {version}..{len(ups)} does not give back the schema after {version - 1}"
            )
