"""A PostgreSQL without pgvector: a clear error naming it, and --skip 2 as the way out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from harness.servers.pgcluster import PgCluster, system_bindir
from natlangchain_migrate import migrate
from natlangchain_migrate.errors import ExitCode
from tests.conftest import ledger_rows, log_events, new_cluster, run_cli

pytestmark = pytest.mark.system  # README: "Running the tests"


@pytest.fixture(scope="module")
def plain_server() -> Iterator[PgCluster]:
    bindir = system_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries on this machine (pg_config --bindir)")
    if (bindir.parent / "lib" / "vector.so").exists():
        pytest.skip(f"the server in {bindir} has pgvector")
    cluster = new_cluster(bindir, "plain").start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_missing_pgvector_stops_before_anything_runs(plain_server: PgCluster) -> None:
    result = run_cli(database_url=plain_server.dsn())
    assert result.returncode == ExitCode.PREREQUISITE
    error = next(e for e in log_events(result.stderr) if e["event"] == "run_failed")["error"]
    assert "002_add_semantic_search.sql" in error
    assert "pgvector" in error
    assert "--skip 2" in error
    assert "Secr3t" not in result.stderr


def test_skip_2_applies_001_and_003(plain_server: PgCluster) -> None:
    report = asyncio.run(migrate(plain_server.dsn(), skip=[2]))
    assert [result.version for result in report.applied] == [1, 3]
    rows = asyncio.run(ledger_rows(plain_server.dsn()))
    assert [row["version"] for row in rows] == [1, 3]
    status = run_cli("--status", "--skip", "2", database_url=plain_server.dsn()).stdout
    assert "○ 002_add_semantic_search: SKIPPED" in status
