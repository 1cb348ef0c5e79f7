"""A 100 MB migration file applies in a runner whose address space is smaller than the file.

RLIMIT_AS, set for the runner's process alone (preexec_fn), caps its virtual memory:
every mapping counts (the interpreter, asyncpg, the heap), so it is a stricter bound
than RSS. Measured on this machine: a no-op run needs about 48 MB of address space
(32 MB fails with MemoryError); the 100 MB file applies under 64 MB, with a peak RSS
9 MB above a no-op run's. The test sets 96 MB: below the file's size, so the file can
never be held whole, and with room for the interpreter's own variation.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from harness.faults.seed_files import write_insert_seed
from natlangchain_migrate.discovery import checksum
from tests.conftest import fetchval, ledger_rows

LIMIT_BYTES = 96 << 20
FILE_BYTES = 100 << 20


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


@pytest.mark.slow
def test_a_100_mb_file_applies_under_an_address_space_smaller_than_it(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "001_seed.sql"
    rows = write_insert_seed(path, FILE_BYTES)
    # The limit bites: holding the file's size in memory is refused under it.
    holds = subprocess.run(
        [sys.executable, "-c", f"b = bytearray({FILE_BYTES})"],
        preexec_fn=_limit,
        capture_output=True,
        check=False,
    )
    assert holds.returncode != 0
    assert b"MemoryError" in holds.stderr
    run = run_limited(folder, database_url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM seed")) == rows
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(path.read_text(encoding="utf-8"))


def run_limited(folder: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """The CLI applying ``folder`` under the memory limit, its log as JSON."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment |= {"DATABASE_URL": database_url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)],
        preexec_fn=_limit,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
