"""lock_timeout with retries: a migration never queues production traffic behind itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import ServerSettingError, migrate, run_migrations
from natlangchain_migrate.errors import ExitCode
from tests.conftest import ledger_rows, log_events, run_cli, write_migrations

FILES = {
    "001_t.sql": "CREATE TABLE t (id int);\n",
    "002_alter.sql": "ALTER TABLE t ADD COLUMN note text;\n",
}


async def _blocker(url: str) -> asyncpg.Connection:
    """A session in an open transaction holding a lock on t that ALTER TABLE must wait for."""
    conn = await asyncpg.connect(url)
    await conn.execute("SET application_name = 'slow-report'")
    await conn.execute("BEGIN; SELECT count(*) FROM t")
    return conn


@pytest.mark.anyio
async def test_blocked_migration_retries_and_succeeds_when_blocker_commits(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    await migrate(database_url, migrations_dir=folder, target=1)
    blocker = await _blocker(database_url)

    async def commit_later() -> None:
        await asyncio.sleep(1.2)
        await blocker.execute("COMMIT")

    committing = asyncio.create_task(commit_later())
    try:
        with capture_logs() as events:
            report = await migrate(
                database_url,
                migrations_dir=folder,
                pg_lock_timeout="200ms",
                lock_retries=10,
                retry_delay=0.2,
            )
    finally:
        await committing
        await blocker.close()
    assert [r.version for r in report.applied] == [2]
    retries = [e for e in events if e["event"] == "migration_lock_timeout"]
    assert retries, "the first attempt should have hit lock_timeout"
    assert retries[0]["blockers"][0]["application_name"] == "slow-report"
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2]


def test_blocker_that_never_commits_exhausts_retries_and_is_named(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    run_migrations(database_url, migrations_dir=folder, target=1)

    async def blocked_run() -> tuple[int, str, int]:
        blocker = await _blocker(database_url)
        try:
            result = await asyncio.to_thread(
                run_cli,
                "--migrations-dir",
                str(folder),
                "--pg-lock-timeout",
                "300ms",
                "--lock-retries",
                "1",
                database_url=database_url,
            )
            return result.returncode, result.stderr, blocker.get_server_pid()
        finally:
            await blocker.close()

    code, stderr, blocker_pid = asyncio.run(blocked_run())
    assert code == ExitCode.LOCK_RETRIES_EXHAUSTED
    error = next(e for e in log_events(stderr) if e["event"] == "run_failed")["error"]
    assert f"pid {blocker_pid} (slow-report" in error
    assert "gave up after 2 attempts" in error
    assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1]


@pytest.mark.anyio
async def test_statement_timeout_directive_cancels_a_slow_migration(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"001_slow.sql": "-- natlangchain: statement-timeout 200ms\nSELECT pg_sleep(5);\n"},
    )
    with pytest.raises(ServerSettingError, match="57014"):
        await migrate(database_url, migrations_dir=folder)
    assert await ledger_rows(database_url) == []


@pytest.mark.anyio
async def test_migration_goes_on_when_the_watcher_cannot_connect(
    database_url: str, tmp_path: Path
) -> None:
    """A role limited to one connection: the watcher's second one is refused, not fatal."""
    role = f"one_conn_{tmp_path.name[-8:].lower().replace('-', '_')}"
    admin = await asyncpg.connect(database_url)
    database = database_url.rsplit("/", 1)[1]
    await admin.execute(
        f"CREATE ROLE {role} LOGIN PASSWORD 'pw-Secr3t-one' CONNECTION LIMIT 1;"
        f'GRANT ALL ON DATABASE "{database}" TO {role}; GRANT ALL ON SCHEMA public TO {role}'
    )
    limited = database_url.replace("postgres:pw-Secr3t-never-printed", f"{role}:pw-Secr3t-one")
    folder = write_migrations(tmp_path / "m", {"001_slow.sql": "SELECT pg_sleep(1.5);\n"})
    try:
        with capture_logs() as events:
            report = await migrate(limited, migrations_dir=folder)
    finally:
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()
    assert [r.version for r in report.applied] == [1]
    assert any(e["event"] == "watcher_unavailable" for e in events)
