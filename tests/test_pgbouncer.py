"""Through a real PgBouncer in transaction pooling mode, with --lock-mode transaction."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers.pgcluster import PASSWORD, PgCluster, free_port
from natlangchain_migrate.dsn import with_database
from tests.conftest import ledger_rows, log_events, migration_locks_held

pytestmark = pytest.mark.system  # README: "Running the tests"

RUNNERS = 16


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


@pytest.fixture(scope="module")
def pgbouncer_url(pg_cluster: PgCluster | None) -> Iterator[str]:
    """A PgBouncer (transaction pooling, 4 server connections) in front of the suite's server."""
    binary = _pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    if pg_cluster is None:
        pytest.skip("needs the suite's own server")
    folder = pg_cluster.root / "pgbouncer"
    folder.mkdir(exist_ok=True)
    port = free_port()
    (folder / "userlist.txt").write_text(f'"postgres" "{PASSWORD}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={pg_cluster.root} port={pg_cluster.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 500\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    if pg_cluster.user:
        for path in (folder, *folder.iterdir()):
            shutil.chown(path, pg_cluster.user)
    bouncer = subprocess.Popen(
        [binary, str(folder / "pgbouncer.ini")],
        user=pg_cluster.user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or bouncer.poll() is not None:
                bouncer.kill()
                pytest.fail(f"pgbouncer did not start: {(folder / 'pgbouncer.log').read_text()}")
            time.sleep(0.1)
    try:
        yield f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        bouncer.terminate()
        bouncer.wait(timeout=10)


@pytest.mark.slow
def test_sixteen_runners_through_pgbouncer_apply_each_migration_once(
    pgbouncer_url: str, database_url: str
) -> None:
    through_bouncer = with_database(pgbouncer_url, database_url.rsplit("/", 1)[1])
    env = os.environ | {
        "DATABASE_URL": through_bouncer,
        "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json",
        "NATLANGCHAIN_MIGRATE_LOCK_MODE": "transaction",
    }
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "natlangchain_migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(RUNNERS)
    ]
    outputs = [runner.communicate(timeout=300) for runner in runners]
    failures = [err for (_, err), r in zip(outputs, runners, strict=True) if r.returncode]
    assert failures == []
    applied = [
        e["version"]
        for _, err in outputs
        for e in log_events(err)
        if e["event"] == "migration_applied"
    ]
    assert sorted(applied) == [1, 2, 3]
    assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1, 2, 3]
    assert asyncio.run(migration_locks_held(database_url)) == 0
    again = subprocess.run(
        [sys.executable, "-m", "natlangchain_migrate", "--status"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0
    assert "Applied: 3 / 3" in again.stdout
    rollback = subprocess.run(
        [sys.executable, "-m", "natlangchain_migrate", "--rollback"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rollback.returncode == 0, rollback.stderr
    assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1, 2]
    assert asyncio.run(migration_locks_held(database_url)) == 0
