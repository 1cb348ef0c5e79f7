"""The replica registry and its heartbeat, against a real PostgreSQL: a replica is listed
with its release while it runs, refreshed, and gone when it stops or goes silent."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import asyncpg
import pytest
from structlog.testing import capture_logs

import natlangchain_migrate
from harness.servers.sql import execute, fetch, fetchval
from natlangchain_migrate import ConfigurationError, heartbeat, start_heartbeat
from natlangchain_migrate.replicas import (
    LABEL_VARIABLE,
    Heartbeat,
    HeartbeatOptions,
    alive_replicas,
)
from tests.conftest import write_migrations

FILES = {"001_a.sql": "CREATE TABLE a (id int);", "007_b.sql": "CREATE TABLE b (id int);"}


async def _rows(url: str) -> list[asyncpg.Record]:
    return await fetch(url, "SELECT * FROM schema_replicas ORDER BY started_at")


def test_heartbeat_names_are_exported_from_the_package() -> None:
    for name in ("heartbeat", "start_heartbeat", "contract", "ContractReport", "ContractResult"):
        assert name in natlangchain_migrate.__all__
        assert getattr(natlangchain_migrate, name) is not None


def test_heartbeat_and_start_heartbeat_take_exactly_heartbeats_keywords() -> None:
    keywords = list(inspect.signature(Heartbeat).parameters)
    assert keywords[0] == "dsn"
    assert list(HeartbeatOptions.__annotations__) == keywords[1:]


@pytest.mark.anyio
async def test_a_heartbeat_registers_its_release_refreshes_and_leaves_no_row(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    monkeypatch.setenv(LABEL_VARIABLE, "api-7f9c")
    with capture_logs() as events:
        async with heartbeat(database_url, migrations_dir=folder, interval=0.05) as beat:
            (row,) = await _rows(database_url)
            assert (row["replica_id"], row["release"], row["label"]) == (
                beat.replica_id,
                7,
                "api-7f9c",
            )
            assert len(beat.replica_id) == 32
            assert int(beat.replica_id, 16) >= 0
            first_seen = row["seen_at"]
            await asyncio.sleep(0.3)
            (row,) = await _rows(database_url)
            assert row["seen_at"] > first_seen
            assert row["started_at"] == first_seen
    assert await _rows(database_url) == []
    names = [e["event"] for e in events]
    assert names[0] == "replica_registered"
    assert names[-1] == "replica_unregistered"


@pytest.mark.anyio
async def test_the_label_defaults_to_the_variable_then_hostname(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    monkeypatch.delenv(LABEL_VARIABLE, raising=False)
    monkeypatch.setenv("HOSTNAME", "pod-abc")
    async with heartbeat(database_url, migrations_dir=folder, replica_id="given") as beat:
        assert (beat.replica_id, beat.label) == ("given", "pod-abc")
    explicit = heartbeat(database_url, migrations_dir=folder, label="mine")
    assert explicit.label == "mine"


@pytest.mark.anyio
async def test_a_heartbeat_with_a_pool_and_a_schema_registers_there(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with heartbeat(pool=pool, migrations_dir=folder, schema="app"):
            assert await fetchval(database_url, "SELECT count(*) FROM app.schema_replicas") == 1
            async with pool.acquire() as conn:
                alive = await alive_replicas(cast(asyncpg.Connection, conn), "app", 60.0)
            assert [replica.release for replica in alive] == [7]
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_a_heartbeat_survives_losing_its_connection(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    async with heartbeat(database_url, migrations_dir=folder, interval=0.05):
        killed = await fetchval(
            database_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'natlangchain-migrate/%' "
            "AND datname = current_database()",  # not the test session's admin connection
        )
        assert killed == 1
        await execute(database_url, "DELETE FROM schema_replicas")
        for _ in range(100):  # the next beats reconnect and register it again
            await asyncio.sleep(0.05)
            if await _rows(database_url):
                break
        assert len(await _rows(database_url)) == 1


def test_start_heartbeat_registers_before_it_returns_and_stop_removes_the_row(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    beat = start_heartbeat(database_url, migrations_dir=folder, interval=0.05)
    try:
        (row,) = asyncio.run(_rows(database_url))
        assert (row["replica_id"], row["release"]) == (beat.replica_id, 7)
    finally:
        beat.stop()
    beat.stop()  # a second stop does nothing
    assert asyncio.run(_rows(database_url)) == []


def test_start_heartbeat_raises_when_it_cannot_register(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    with pytest.raises(natlangchain_migrate.DatabaseUnreachableError):
        start_heartbeat("postgresql://u:p@127.0.0.1:1/none", migrations_dir=folder)


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_a_bad_interval_is_refused_naming_it(interval: float, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    with pytest.raises(ConfigurationError, match="heartbeat interval"):
        heartbeat("postgresql://x/y", migrations_dir=folder, interval=interval)


@pytest.mark.slow
def test_eight_processes_starting_heartbeats_at_once_on_a_fresh_database(
    database_url: str, tmp_path: Path
) -> None:
    """Eight gunicorn-like workers at once: the registry is created once, no one fails, and
    a worker that exits normally removes its own row (atexit)."""
    folder = write_migrations(tmp_path / "m", FILES)
    script = (
        "import natlangchain_migrate as m\n"
        f"beat = m.start_heartbeat({database_url!r}, migrations_dir={str(folder)!r})\n"
        "print(beat.replica_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(8)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 8, outputs[0][1][-800:]
    ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(ids) == 8
    assert asyncio.run(_rows(database_url)) == []
