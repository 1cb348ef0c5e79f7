"""Batched backfills: one short transaction per batch with its position, resumed after a
kill -9 at any moment, every row changed exactly once."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import structlog.testing

from harness.servers.sql import execute as sql_execute
from natlangchain_migrate.api import migrate
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.errors import ConfigurationError
from tests.backfills import (
    FILL,
    ROWS,
    TABLE,
    backfill_folder,
    changed_once,
    rows_done,
    start_run,
)
from tests.conftest import fetchval, ledger_rows, write_migrations


@pytest.mark.anyio
async def test_a_backfill_changes_every_row_once_and_records_itself(
    database_url: str, tmp_path: Path
) -> None:
    await migrate(database_url, migrations_dir=backfill_folder(tmp_path, "batch=auto target=50ms"))
    assert await changed_once(database_url)
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]
    assert await fetchval(database_url, "SELECT count(*) FROM schema_backfills") == 0


@pytest.mark.anyio
async def test_progress_events_carry_rows_done_estimated_and_eta(
    database_url: str, tmp_path: Path
) -> None:
    folder = backfill_folder(tmp_path, "batch=2000")
    with structlog.testing.capture_logs() as events:
        await migrate(database_url, migrations_dir=folder, progress_interval=0.001)
    progress = [e for e in events if e["event"] == "backfill_progress"]
    assert len(progress) >= 5
    assert [e["rows_done"] for e in progress] == sorted(e["rows_done"] for e in progress)
    assert progress[-1]["rows_done"] == ROWS
    assert progress[-1]["eta_s"] == 0.0
    assert all(e["rows_estimated"] >= e["rows_done"] for e in progress)
    assert any(e["eta_s"] not in (None, 0.0) for e in progress[:-1])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("batch=zero", "batch=zero"),
        ("target=soon", "durations"),
        ("colour=red", "bad backfill setting 'colour=red'"),
    ],
)
async def test_bad_backfill_settings_are_refused_before_anything_runs(
    database_url: str, tmp_path: Path, settings: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await migrate(database_url, migrations_dir=backfill_folder(tmp_path, settings))
    assert await fetchval(database_url, "SELECT to_regclass('big') IS NULL")


@pytest.mark.anyio
@pytest.mark.parametrize("earlier_table", [False, True])
@pytest.mark.parametrize(
    "files",
    [
        ("20240101000001_big.sql", "20240101000002_fill.sql"),
        ("20240101000001_big/migration.sql", "20240101000002_fill/migration.sql"),  # prisma
        ("20150100000001000000_big.sql", "20150100000002000000_fill.sql"),  # pop's 20 digits
    ],
)
async def test_a_backfill_with_a_timestamp_version_runs_in_any_layout(
    database_url: str, tmp_path: Path, files: tuple[str, str], earlier_table: bool
) -> None:
    """Its position's version overflowed the integer column (22000 out of int32 range),
    and a prisma backfill was split as plain SQL first (a syntax error at :lo). A table an
    earlier release made as integer widens in place."""
    if earlier_table:
        await fetchval(
            database_url,
            "CREATE TABLE schema_backfills (version integer PRIMARY KEY, position text NOT "
            "NULL, rows_done bigint NOT NULL, updated_at timestamptz NOT NULL)",
        )
    folder = write_migrations(
        tmp_path / "m", {files[0]: TABLE, files[1]: FILL.format(settings="batch=5000")}
    )
    await migrate(database_url, migrations_dir=folder)
    assert await changed_once(database_url)
    assert len(await ledger_rows(database_url)) == 2
    assert await fetchval(database_url, "SELECT count(*) FROM schema_backfills") == 0


@pytest.mark.anyio
async def test_a_backfill_needs_its_own_transactions(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"002_fill\.sql is a backfill"):
        await migrate(
            database_url, migrations_dir=backfill_folder(tmp_path, ""), lock_mode="transaction"
        )


@pytest.mark.anyio
async def test_a_batch_blocked_by_lock_timeout_is_retried_from_the_last_batch(
    database_url: str, tmp_path: Path
) -> None:
    """An app transaction holds a row: the batch that reaches it gives up after
    lock_timeout, and the retry resumes after the last committed batch."""
    folder = backfill_folder(tmp_path, "batch=1000")
    await migrate(database_url, migrations_dir=folder, target=1)
    blocker = await asyncpg.connect(database_url)
    try:
        await blocker.execute("BEGIN; UPDATE big SET v = v WHERE id = 15000")
        with structlog.testing.capture_logs() as events:
            run = asyncio.ensure_future(
                migrate(
                    database_url,
                    migrations_dir=folder,
                    pg_lock_timeout="100ms",
                    lock_retries=20,
                    retry_delay=0.1,
                )
            )
            for _ in range(400):  # until a batch has given up at least once
                if any(e["event"] == "migration_lock_timeout" for e in events):
                    break
                await asyncio.sleep(0.05)
            await blocker.execute("COMMIT")
            await run
    finally:
        await blocker.close()
    assert await changed_once(database_url)
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]


@pytest.fixture
def trial_databases(admin_url: str) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for url in made:
        name = url.rsplit("/", 1)[-1]
        asyncio.run(sql_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_and_changes_every_row_once(
    admin_url: str, tmp_path: Path, trial_databases: list[str]
) -> None:
    """20 trials: kill -9 after a random delay (sometimes twice), then a plain run."""
    folder = backfill_folder(tmp_path, "batch=250 pause=5ms")
    rng = random.Random(21)
    mid_backfill = 0
    for trial in range(20):
        name = f"bf_{uuid.uuid4().hex[:10]}"
        asyncio.run(sql_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        url = with_database(admin_url, name)
        trial_databases.append(url)
        for _ in range(1 + trial % 2):
            process = start_run(folder, url, output=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 2.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            done = asyncio.run(rows_done(url))
            if done and done < ROWS:
                mid_backfill += 1
        rerun = start_run(folder, url, output=subprocess.DEVNULL)
        assert rerun.wait(timeout=300) == 0, f"trial {trial}: the plain run failed"
        assert asyncio.run(changed_once(url)), f"trial {trial}: a row changed twice or never"
        rows = asyncio.run(ledger_rows(url))
        assert [row["version"] for row in rows] == [1, 2]
    assert mid_backfill >= 3, f"only {mid_backfill} kills landed inside the backfill"
