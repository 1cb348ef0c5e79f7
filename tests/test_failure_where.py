"""A runtime error in a transactional file, up or down, names the failing statement's
file:line (found on failure only, by a replay that is rolled back), in either lock mode:
under ``--lock-mode transaction`` the replay runs in the lock's transaction, rolled back
to the file's savepoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from natlangchain_migrate import MigrationFailedError, discovery, migrate, rollback, streamed
from natlangchain_migrate.errors import ExitCode
from tests.conftest import fetchval, ledger_rows, log_events, run_cli, table_names, write_migrations

LOCK_MODES = ["session", "transaction"]

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


async def _nothing_applied(url: str) -> bool:
    """No table but the ledger, and no row (in transaction lock mode even the ledger's
    creation is rolled back with the run)."""
    tables = await table_names(url)
    if "schema_migrations" not in tables:
        return not tables
    return tables == {"schema_migrations"} and not await ledger_rows(url)


@pytest.mark.anyio
@pytest.mark.parametrize("lock_mode", LOCK_MODES)
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_runtime_error_in_an_up_file_names_its_line(
    database_url: str, tmp_path: Path, case: str, lock_mode: str
) -> None:
    sql, sqlstate, line = CASES[case]
    folder = write_migrations(
        tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n", "002_x.sql": sql}
    )
    with pytest.raises(MigrationFailedError) as caught:
        await migrate(database_url, migrations_dir=folder, lock_mode=lock_mode)
    assert caught.value.sqlstate == sqlstate
    assert caught.value.location.startswith(f"002_x.sql:{line}:")
    assert str(caught.value).startswith(f"002_x.sql:{line}:")
    # Neither the failed run nor the replay left anything of 002 (in transaction lock
    # mode, nothing of 001 either: it shared the failed transaction).
    if lock_mode == "session":
        assert await table_names(database_url) == {"a", "schema_migrations"}
        assert [row["version"] for row in await ledger_rows(database_url)] == [1]
    else:
        assert await _nothing_applied(database_url)


@pytest.mark.anyio
@pytest.mark.parametrize("lock_mode", LOCK_MODES)
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_runtime_error_in_a_down_file_names_its_line(
    database_url: str, tmp_path: Path, case: str, lock_mode: str
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
        await rollback(database_url, migrations_dir=folder, lock_mode=lock_mode)
    assert caught.value.sqlstate == sqlstate
    assert caught.value.location.startswith(f"002_b.down.sql:{line + 1}:")
    assert await table_names(database_url) == {"a", "b", "schema_migrations"}
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]


# The reproduction: a duplicate key on line 4, after a blank line.
DUPLICATE = (
    "create table a (id int primary key);\ninsert into a values (1);\n\ninsert into a values (1);\n"
)
# The same in golang-migrate's layout, wrapped whole in BEGIN; ... COMMIT; (the wrapper
# is blanked out, lines kept).
WRAPPED = f"BEGIN;\n{DUPLICATE}COMMIT;\n"
FILES = {
    "plain": ("001_a.sql", DUPLICATE, 4),
    "golang-migrate": ("1_a.up.sql", WRAPPED, 5),
}


@pytest.mark.anyio
@pytest.mark.parametrize("big", [False, True], ids=["read-whole", "streamed"])
@pytest.mark.parametrize("layout", sorted(FILES))
async def test_both_lock_modes_name_the_same_line_of_a_runtime_error(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    big: bool,
) -> None:
    """The same file fails at the same file:line:column in either lock mode, read whole or
    streamed as a big file is (STREAM_BYTES made 0 here), and nothing stays."""
    if big:
        monkeypatch.setattr(discovery, "STREAM_BYTES", 0)
        monkeypatch.setattr(streamed, "PIECE_CHARS", 16)  # a piece per statement or two
    name, text, line = FILES[layout]
    folder = write_migrations(tmp_path / "m", {name: text})
    (loaded,) = discovery.load_migrations(folder)
    assert (loaded.source is not None) == big
    where: dict[str, str] = {}
    for lock_mode in LOCK_MODES:
        with pytest.raises(MigrationFailedError) as caught:
            await migrate(database_url, migrations_dir=folder, lock_mode=lock_mode)
        assert caught.value.sqlstate == "23505"
        where[lock_mode] = caught.value.location
        assert str(caught.value).startswith(f"{caught.value.location}: 23505 ")
        assert await fetchval(database_url, "SELECT to_regclass('a') IS NULL")
        assert await _nothing_applied(database_url)
    assert where == {mode: f"{name}:{line}:1" for mode in LOCK_MODES}


@pytest.mark.parametrize("lock_mode", LOCK_MODES)
def test_the_cli_names_the_line_and_fails_the_same_way_in_either_lock_mode(
    tmp_path: Path, database_url: str, lock_mode: str
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_a.sql": DUPLICATE})
    result = run_cli(
        "--migrations-dir", str(folder), "--lock-mode", lock_mode, database_url=database_url
    )
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr[-2000:]
    (failed,) = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert failed["error"].startswith("001_a.sql:4:1: 23505 duplicate key value"), failed
    (logged,) = [e for e in log_events(result.stderr) if e["event"] == "migration_failed"]
    assert logged["file"] == "001_a.sql:4:1"
