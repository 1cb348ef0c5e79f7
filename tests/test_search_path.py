"""The connection's own search_path (a role's setting, ?options=-csearch_path) does not
decide where migrations go: --schema does, and the run says it overrode it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import migrate
from tests.conftest import table_names, write_migrations

FILES = {"001_a.sql": "CREATE TABLE a (id int);\n"}


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_options_search_path_is_overridden_and_said(
    database_url: str, tmp_path: Path
) -> None:
    await _execute(database_url, "CREATE SCHEMA app")
    url = f"{database_url}?options={quote('-csearch_path=app')}"
    folder = write_migrations(tmp_path / "m", FILES)
    with capture_logs() as events:
        await migrate(url, migrations_dir=folder)
    assert "a" in await table_names(database_url, "public")
    (said,) = [e for e in events if e["event"] == "search_path_overridden"]
    assert said["connection_schema"] == "app"
    assert "--schema app" in said["hint"]
    # With --schema app the tables go where the connection pointed, and nothing is said.
    folder2 = write_migrations(tmp_path / "m2", {"001_b.sql": "CREATE TABLE b (id int);\n"})
    with capture_logs() as events:
        await migrate(url, migrations_dir=folder2, schema="app")
    assert "b" in await table_names(database_url, "app")
    assert not [e for e in events if e["event"] == "search_path_overridden"]


@pytest.mark.anyio
async def test_a_databases_or_roles_search_path_is_overridden_and_said(
    database_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute("CREATE SCHEMA app")
        await conn.execute(f'ALTER DATABASE "{database}" SET search_path = app')
    finally:
        await conn.close()
    folder = write_migrations(tmp_path / "m", FILES)
    with capture_logs() as events:
        await migrate(database_url, migrations_dir=folder)
    assert "a" in await table_names(database_url, "public")
    assert [e for e in events if e["event"] == "search_path_overridden"]


@pytest.mark.anyio
async def test_another_schema_by_flag_alone_says_nothing(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    with capture_logs() as events:
        await migrate(database_url, migrations_dir=folder, schema="fresh")
    assert "a" in await table_names(database_url, "fresh")
    assert not [e for e in events if e["event"] == "search_path_overridden"]
