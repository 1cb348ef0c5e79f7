"""libpq's conventions: the PG* environment and the passfile name the server when no
DSN is given (never the embedded one), the log says where the settings came from, TLS
failures say what TLS needs, and other drivers' URL spellings are named with the fix."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from harness.servers.pgcluster import PASSWORD
from natlangchain_migrate import ConfigurationError, migrate
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, run_cli, table_names, write_migrations

FILES = {"001_a.sql": "CREATE TABLE a (id int);\n"}


def pg_environment(url: str, *, password: bool = True) -> dict[str, str]:
    """The PG* variables that name the same database as ``url``."""
    parts = urlsplit(url)
    env = {
        "PGHOST": parts.hostname or "",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": unquote(parts.username or ""),
        "PGDATABASE": parts.path.lstrip("/"),
    }
    if password:
        env["PGPASSWORD"] = unquote(parts.password or "")
    return env


def test_the_cli_migrates_the_server_pghost_names_not_the_embedded_one(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli(
        "--migrations-dir", str(folder), database_url=None, env=pg_environment(database_url)
    )
    assert result.returncode == 0, result.stderr
    events = log_events(result.stderr)
    assert "embedded_server_ready" not in [e["event"] for e in events]
    (connecting,) = [e for e in events if e["event"] == "connecting"]
    assert connecting["source"] == "PG* environment"
    assert "PGHOST=" in connecting["target"]
    assert PASSWORD not in result.stderr + result.stdout
    import asyncio

    assert "a" in asyncio.run(table_names(database_url))


def test_the_passfile_gives_the_password(database_url: str, tmp_path: Path) -> None:
    env = pg_environment(database_url, password=False)
    passfile = tmp_path / "pgpass"
    password = unquote(urlsplit(database_url).password or "")
    passfile.write_text(
        f"{env['PGHOST']}:{env['PGPORT']}:{env['PGDATABASE']}:{env['PGUSER']}:{password}\n",
        encoding="utf-8",
    )
    passfile.chmod(0o600)
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli(
        "--migrations-dir", str(folder), database_url=None, env=env | {"PGPASSFILE": str(passfile)}
    )
    assert result.returncode == 0, result.stderr


def test_database_url_wins_over_the_pg_environment(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    wrong = {"PGHOST": "no-such-host.invalid", "PGPORT": "1"}
    result = run_cli("--migrations-dir", str(folder), database_url=database_url, env=wrong)
    assert result.returncode == 0, result.stderr
    (connecting,) = [e for e in log_events(result.stderr) if e["event"] == "connecting"]
    assert connecting["source"] == "DATABASE_URL"


@pytest.mark.anyio
async def test_the_library_honours_pghost_without_a_dsn(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key, value in pg_environment(database_url).items():
        monkeypatch.setenv(key, value)
    folder = write_migrations(tmp_path / "m", FILES)
    report = await migrate(migrations_dir=folder)
    assert [r.version for r in report.applied] == [1]


def test_sslmode_require_against_a_server_without_tls_is_not_retried(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli(
        "--migrations-dir",
        str(folder),
        "--wait",
        "30",
        database_url=f"{database_url}?sslmode=require",
    )
    assert result.returncode == ExitCode.CONNECTION_REJECTED, result.stderr
    events = log_events(result.stderr)
    assert "database_waiting" not in [e["event"] for e in events]
    failed = [e for e in events if e["event"] == "run_failed"]
    assert "does not offer TLS" in failed[0]["error"]
    assert "sslmode=require" in failed[0]["error"]
    assert PASSWORD not in result.stderr


def test_pgsslmode_require_is_honoured_too(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    env = pg_environment(database_url) | {"PGSSLMODE": "require"}
    result = run_cli("--migrations-dir", str(folder), database_url=None, env=env)
    assert result.returncode == ExitCode.CONNECTION_REJECTED, result.stderr
    assert "does not offer TLS" in result.stderr


def test_verify_full_without_a_root_certificate_keeps_the_drivers_reason(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli(
        "--migrations-dir",
        str(folder),
        database_url=f"{database_url}?sslmode=verify-full",
        env={"HOME": str(home)},
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    message = failed[0]["error"]
    assert "root.crt" in message
    assert "sslrootcert=" in message
    assert "percent-encoded" not in message
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize(
    ("scheme", "fix"),
    [
        ("postgresql+asyncpg://", "drop '+asyncpg'"),
        ("postgresql+psycopg://", "drop '+psycopg'"),
        ("postgres+psycopg2://", "drop '+psycopg2'"),
        ("jdbc:postgresql://", "drop the 'jdbc:' prefix"),
    ],
)
def test_other_drivers_url_spellings_are_named_with_the_fix(
    database_url: str, tmp_path: Path, scheme: str, fix: str
) -> None:
    foreign = scheme + database_url.split("://", 1)[1]
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli("--migrations-dir", str(folder), database_url=foreign)
    assert result.returncode == ExitCode.USAGE, result.stderr
    failed = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert fix in failed[0]["error"]
    assert PASSWORD not in result.stderr


@pytest.mark.anyio
async def test_the_library_names_the_foreign_prefix_too(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    with pytest.raises(ConfigurationError, match="SQLAlchemy"):
        await migrate("postgresql+asyncpg://u:p@localhost/db", migrations_dir=folder)


def test_no_pg_variable_leaks_from_the_test_environment() -> None:
    """The suite's own processes must not inherit a PGHOST that would redirect them."""
    assert not any(os.environ.get(name) for name in ("PGHOST", "PGPORT", "PGDATABASE"))


def test_sslmode_in_a_key_value_dsn_is_read_too(database_url: str, tmp_path: Path) -> None:
    parts = urlsplit(database_url)
    dsn = (
        f"host={parts.hostname} port={parts.port} user={parts.username} "
        f"password='{unquote(parts.password or '')}' dbname={parts.path.lstrip('/')} "
        "sslmode=require"
    )
    folder = write_migrations(tmp_path / "m", FILES)
    result = run_cli("--migrations-dir", str(folder), "--wait", "30", database_url=dsn)
    assert result.returncode == ExitCode.CONNECTION_REJECTED, result.stderr
    assert "does not offer TLS" in result.stderr
    assert PASSWORD not in result.stderr


def test_an_empty_database_url_beside_pghost_says_unsetting_it_uses_pghost(
    database_url: str, tmp_path: Path
) -> None:
    """Before, the refusal said to unset DATABASE_URL "to use the embedded server", which
    is not what happens when PGHOST names a server."""
    folder = write_migrations(tmp_path / "m", FILES)
    env = {**pg_environment(database_url), "DATABASE_URL": ""}
    result = run_cli("--check", "--migrations-dir", str(folder), database_url=None, env=env)
    assert result.returncode == ExitCode.USAGE
    error = log_events(result.stderr)[-1]["error"]
    assert "set but empty" in error
    assert "embedded" not in error
    assert "PGHOST" in error
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("server", ["localhost", ""])
def test_dbmates_socket_parameter_is_named_with_libpqs_spelling(
    tmp_path: Path, server: str
) -> None:
    """dbmate's documented Unix-socket URL (postgres://user:pw@/db?socket=/var/run/postgresql)
    connected to localhost:5432 or the default socket instead, and the refusal ("is the
    server running?") did not name socket=; it is refused, with host=DIR to write instead."""
    folder = write_migrations(tmp_path / "m", FILES)
    url = f"postgres://app:{PASSWORD}@{server}/app?socket=/var/run/postgresql&sslmode=disable"
    result = run_cli("--check", "--migrations-dir", str(folder), database_url=url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    error = log_events(result.stderr)[-1]["error"]
    assert "socket=" in error
    assert "?host=/var/run/postgresql" in error
    assert PASSWORD not in result.stderr + result.stdout
