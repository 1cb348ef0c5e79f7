"""A runtime error in a transactional file, up or down, names the failing statement's
file:line (found on failure only, by a replay that is rolled back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natlangchain_migrate import MigrationFailedError, migrate, rollback
from tests.conftest import ledger_rows, table_names, write_migrations

CASES = {
    "unique-violation": (
        "CREATE TABLE u (id int UNIQUE);\n"
        "INSERT INTO u VALUES (1);\n"
        "\n"
        "-- the backfill\n"
        "INSERT INTO u SELECT 1;\n"
        "CREATE TABLE after_it (id int);\n",
        "23505",
        5,
    ),
    "division-by-zero": (
        "CREATE TABLE d (id int);\nSELECT 1;\nSELECT 1 / (SELECT count(*) FROM d);\n",
        "22012",
        3,
    ),
    "failed-cast": (
        "CREATE TABLE c (v text);\nINSERT INTO c VALUES ('x');\n"
        "ALTER TABLE c ALTER COLUMN v TYPE int USING v::int;\n",
        "22P02",
        3,
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_runtime_error_in_an_up_file_names_its_line(
    database_url: str, tmp_path: Path, case: str
) -> None:
    sql, sqlstate, line = CASES[case]
    folder = write_migrations(
        tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n", "002_x.sql": sql}
    )
    with pytest.raises(MigrationFailedError) as caught:
        await migrate(database_url, migrations_dir=folder)
    assert caught.value.sqlstate == sqlstate
    assert caught.value.location.startswith(f"002_x.sql:{line}:")
    assert str(caught.value).startswith(f"002_x.sql:{line}:")
    # Neither the failed run nor the replay left anything of 002.
    assert await table_names(database_url) == {"a", "schema_migrations"}
    assert [row["version"] for row in await ledger_rows(database_url)] == [1]


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_runtime_error_in_a_down_file_names_its_line(
    database_url: str, tmp_path: Path, case: str
) -> None:
    sql, sqlstate, line = CASES[case]
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_b.sql": "CREATE TABLE b (id int);\n",
            "002_b.down.sql": "DROP TABLE b;\n" + sql,
        },
    )
    await migrate(database_url, migrations_dir=folder)
    with pytest.raises(MigrationFailedError) as caught:
        await rollback(database_url, migrations_dir=folder)
    assert caught.value.sqlstate == sqlstate
    assert caught.value.location.startswith(f"002_b.down.sql:{line + 1}:")
    assert await table_names(database_url) == {"a", "b", "schema_migrations"}
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]
