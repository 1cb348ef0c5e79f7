"""Connecting in production: a server still starting, a wrong password, a standby."""

from __future__ import annotations

import os
from collections.abc import Iterator

import anyio
import pytest
from structlog.testing import capture_logs

from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from natlangchain_migrate import ConnectionRejectedError, migrate
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, new_cluster, run_cli


@pytest.mark.system
@pytest.mark.anyio
@pytest.mark.slow
async def test_wait_connects_to_a_server_that_starts_later() -> None:
    cluster = new_cluster(embedded_bindir(), "late")

    async def start_later() -> None:
        await anyio.sleep(2)
        await anyio.to_thread.run_sync(cluster.start)

    try:
        with capture_logs() as events:
            async with anyio.create_task_group() as group:
                group.start_soon(start_later)
                await migrate(cluster.dsn(), wait=60)
        names = [e["event"] for e in events]
        assert names.count("database_waiting") >= 2
        assert names.count("migration_applied") == 3
        assert "Secr3t" not in repr(events)
    finally:
        cluster.destroy()


@pytest.mark.anyio
async def test_wait_does_not_retry_a_wrong_password(database_url: str) -> None:
    wrong = database_url.replace("pw-Secr3t", "wrong-Secr3t")
    with capture_logs() as events, pytest.raises(ConnectionRejectedError) as rejected:
        with anyio.fail_after(30):
            await migrate(wrong, wait=60)
    assert rejected.value.exit_code == ExitCode.CONNECTION_REJECTED
    assert "database_waiting" not in [e["event"] for e in events]
    assert "password" in str(rejected.value)


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
    replica = PgCluster(embedded_bindir(), name="standby", parent=memory_backed_dir())
    replica.init_replica_of(pg_cluster).start()
    try:
        yield replica
    finally:
        replica.destroy()


@pytest.mark.system
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


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("x-migrations-table=my_migrations", "x-migrations-table"),  # golang-migrate's option
        ("x-multi-statement=true", "x-multi-statement"),
        ("statement_timeout=abc", "statement_timeout"),  # a real setting, a bad value
    ],
)
def test_a_url_parameter_the_server_refuses_is_named_with_what_to_do(
    database_url: str, query: str, named: str
) -> None:
    """asyncpg sends a URL's unknown query parameters to the server as settings: one the
    server refuses at start-up is a usage error naming it (before: exit 70, the server's
    words alone), and the password stays out of it."""
    separator = "&" if "?" in database_url else "?"
    result = run_cli("--status", database_url=f"{database_url}{separator}{query}")
    assert result.returncode == ExitCode.USAGE, result.stderr
    error = log_events(result.stderr)[-1]["error"]
    assert named in error
    assert "remove it from the URL" in error
    assert "Secr3t" not in result.stderr + result.stdout
