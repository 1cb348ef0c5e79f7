"""The package as users get it: the SQL inside the wheel; the API from sync code and with a pool."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest

from natlangchain_migrate import migrate, run_migrations, status
from natlangchain_migrate.plan import State
from tests.conftest import ledger_rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_the_sql_files_and_type_marker(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    licence = next(name for name in names if name.endswith(".dist-info/licenses/LICENSE"))
    assert "Apache License" in zipfile.ZipFile(wheel).read(licence).decode()
    for stem in ("001_initial_schema", "002_add_semantic_search", "003_add_scaling_tables"):
        assert f"natlangchain_migrate/sql/{stem}.sql" in names
        assert f"natlangchain_migrate/sql/{stem}.down.sql" in names
    assert "natlangchain_migrate/py.typed" in names


def test_run_migrations_serves_synchronous_apps(database_url: str) -> None:
    """What a Flask app calls before serving: a plain function, no event loop of its own."""
    report = run_migrations(database_url)
    assert [r.version for r in report.applied] == [1, 2, 3]
    assert run_migrations(database_url).up_to_date


@pytest.mark.anyio
async def test_migrate_borrows_a_connection_from_the_apps_pool(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        report = await migrate(pool=pool)
        assert [r.version for r in report.applied] == [1, 2, 3]
        plan = await status(pool=pool)
        assert [e.state for e in plan.entries] == [State.APPLIED] * 3
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM chain_state") == 1
    finally:
        await pool.close()
    assert len(await ledger_rows(database_url)) == 3
