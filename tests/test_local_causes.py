"""Causes on this side of the connection, each named rightly in one line: files and
folders the user cannot read or write, another tool's ledger, a schema name PostgreSQL
would cut, a folder where a file belongs, a version given as a string."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from natlangchain_migrate import ConfigurationError, migrate
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, run_cli, table_names, write_migrations

FILES = {"001_a.sql": "CREATE TABLE a (id int);\n", "002_b.sql": "CREATE TABLE b (id int);\n"}
NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder other users can reach (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="nlcm-local-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for item in path.rglob("*"):
            item.chmod(0o755)
        shutil.rmtree(path)


def as_other_user(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI run by a user without root's powers (root reads and writes anything)."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment |= {"NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json", "HOME": tempfile.gettempdir()} | (
        env or {}
    )
    command = [sys.executable, "-m", "natlangchain_migrate", *args]
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def _failed(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert len(failed) == 1, result.stderr
    return str(failed[0]["error"])


def test_an_unreadable_migration_file_is_named(database_url: str, shared_dir: Path) -> None:
    folder = write_migrations(shared_dir / "m", FILES)
    folder.chmod(0o755)
    (folder / "002_b.sql").chmod(0o000)
    result = as_other_user("--migrations-dir", str(folder), env={"DATABASE_URL": database_url})
    assert result.returncode == ExitCode.USAGE, result.stderr
    message = _failed(result)
    assert "002_b.sql: cannot read it" in message
    assert "chmod a+r" in message


def test_a_folder_without_permission_is_named_not_its_manifest(
    database_url: str, shared_dir: Path
) -> None:
    folder = write_migrations(shared_dir / "m", FILES)
    folder.chmod(0o700)  # root's own: the other user may not search it
    result = as_other_user("--migrations-dir", str(folder), env={"DATABASE_URL": database_url})
    assert result.returncode == ExitCode.USAGE, result.stderr
    message = _failed(result)
    assert f"migrations directory {folder}: permission denied" in message
    assert "migrations.sum" not in message


def test_new_in_a_folder_the_user_cannot_write_is_one_line(shared_dir: Path) -> None:
    folder = write_migrations(shared_dir / "m", FILES)
    folder.chmod(0o755)  # readable, not writable by the other user
    result = as_other_user("new", "add_c", "--migrations-dir", str(folder))
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write in {folder}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_file_passed_as_the_migrations_folder_is_named(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli("--migrations-dir", str(folder / "001_a.sql"), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    message = _failed(result)
    assert "is a file, not a folder" in message
    assert "migrations.sum" not in message


def test_a_folder_named_like_a_migration_is_skipped_by_sum_and_the_runner(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    (folder / "004_x.sql").mkdir()
    assert run_cli("sum", "--migrations-dir", str(folder), database_url=None).returncode == 0
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    check = run_cli("sum", "--check", "--migrations-dir", str(folder), database_url=None)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(
    ("create", "tool"),
    [
        ("CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)", "dbmate"),
        (
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, "
            "dirty boolean NOT NULL)",
            "golang-migrate",
        ),
    ],
)
@pytest.mark.parametrize("rows", [False, True], ids=["empty", "with-rows"])
def test_another_tools_ledger_is_named_not_a_bug(
    database_url: str, tmp_path: Path, create: str, tool: str, rows: bool
) -> None:
    async def setup() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(create)
            if rows:
                value = "'20240101120000'" if "varchar" in create else "20240101120000"
                extra = ", false" if "dirty" in create else ""
                await conn.execute(f"INSERT INTO schema_migrations VALUES ({value}{extra})")
        finally:
            await conn.close()

    asyncio.run(setup())
    folder = write_migrations(tmp_path / "m", FILES)
    for args in ((), ("--status",)):
        result = run_cli("--migrations-dir", str(folder), *args, database_url=database_url)
        assert result.returncode == ExitCode.USAGE, result.stderr
        message = _failed(result)
        assert tool in message
        assert f"adopt --from {tool}" in message  # issue 20: the way over from that tool
    assert asyncio.run(table_names(database_url)) == {"schema_migrations"}


def test_a_schema_name_longer_than_63_bytes_is_a_usage_error(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli(
        "--migrations-dir", str(folder), "--schema", "s" * 64, database_url=database_url
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "63 bytes" in _failed(result)
    result = run_cli(
        "--migrations-dir", str(folder), "--schema", "pg_catalog", database_url=database_url
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "PostgreSQL's own" in _failed(result)


@pytest.mark.anyio
async def test_a_target_given_as_a_string_of_digits_is_that_version(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    report = await migrate(database_url, migrations_dir=folder, target="1")  # type: ignore[arg-type]
    assert [r.version for r in report.applied] == [1]
    with pytest.raises(ConfigurationError, match="not a version number"):
        await migrate(database_url, migrations_dir=folder, target="two")  # type: ignore[arg-type]


def test_a_nul_byte_in_a_file_is_named_not_a_lost_connection(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_a.sql").write_bytes(b"CREATE TABLE a (id int);\nSELECT 1;\x00\n")
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "001_a.sql:2: a NUL byte" in _failed(result)
