"""Connecting in production: a server still starting, a wrong password, a standby."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness.pgcluster import PgCluster, embedded_bindir
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, run_cli


@pytest.mark.slow
def test_wait_connects_to_a_server_that_starts_later() -> None:
    cluster = PgCluster(embedded_bindir(), name="late").init()
    try:
        env = os.environ | {
            "DATABASE_URL": cluster.dsn(),
            "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json",
        }
        runner = subprocess.Popen(
            [sys.executable, "-m", "natlangchain_migrate", "--wait", "60"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        cluster.start()
        _, stderr = runner.communicate(timeout=120)
        assert runner.returncode == 0, stderr
        events = [e["event"] for e in log_events(stderr)]
        assert events.count("database_waiting") >= 2
        assert events.count("migration_applied") == 3
        assert "Secr3t" not in stderr
    finally:
        cluster.destroy()


def test_wait_does_not_retry_a_wrong_password(database_url: str) -> None:
    wrong = database_url.replace("pw-Secr3t", "wrong-Secr3t")
    result = run_cli("--wait", "60", database_url=wrong, timeout=30)
    assert result.returncode == ExitCode.CONNECTION_REJECTED
    events = log_events(result.stderr)
    assert "database_waiting" not in [e["event"] for e in events]
    assert "password" in events[-1]["error"]


def test_wait_gives_up_on_a_server_that_never_comes(database_url: str) -> None:
    port = database_url.rsplit(":", 1)[1].split("/")[0]
    nowhere = database_url.replace(f":{port}/", ":1/")
    result = run_cli("--wait", "1.5", database_url=nowhere)
    assert result.returncode == ExitCode.UNREACHABLE
    assert "for 1.5s" in log_events(result.stderr)[-1]["error"]


@pytest.fixture
def standby(pg_cluster: PgCluster | None, database_url: str) -> Iterator[PgCluster]:
    if pg_cluster is None:
        pytest.skip("needs the suite's own server to copy with pg_basebackup")
    replica = PgCluster(embedded_bindir(), name="standby").init_replica_of(pg_cluster).start()
    try:
        yield replica
    finally:
        replica.destroy()


@pytest.mark.slow
def test_standby_is_refused_with_a_pointer_to_the_primary(
    standby: PgCluster, database_url: str
) -> None:
    database = database_url.rsplit("/", 1)[1]
    result = run_cli(database_url=standby.dsn(database))
    assert result.returncode == ExitCode.READ_ONLY
    assert (
        "point --database-url or DATABASE_URL at the primary"
        in log_events(result.stderr)[-1]["error"]
    )
    assert (
        run_cli("--check", database_url=standby.dsn(database)).returncode == ExitCode.CHECK_PENDING
    )


@pytest.mark.anyio
async def test_connections_keep_alive_and_name_themselves(database_url: str) -> None:
    """Both ends probe a silent peer within about a minute, not the kernel's two hours."""
    import socket

    from natlangchain_migrate.connection import KEEPALIVE_IDLE_S, connect

    conn = await connect(database_url)
    try:
        sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
        assert await conn.fetchval("SHOW tcp_keepalives_idle") == str(KEEPALIVE_IDLE_S)
        name = await conn.fetchval("SHOW application_name")
        assert name.startswith("natlangchain-migrate/")
        assert name.endswith(f"/{os.getpid()}")
    finally:
        await conn.close()
