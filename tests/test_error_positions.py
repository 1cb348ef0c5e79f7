"""The server's error position, mapped back into ``file:line:column`` of the file as an
editor shows it, whatever the runner sent before the file (BEGIN, settings, earlier
blocks of a no-transaction file) and whatever the file holds (CRLF, a BOM, multi-byte
characters, dollar quotes, no final newline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natlangchain_migrate import MigrationFailedError, migrate
from natlangchain_migrate.statements import line_and_column

pytestmark = pytest.mark.anyio

NO_TX = "-- natlangchain: no-transaction\n"

CASES = {
    "first-line-first-column": ("nowhere;\n", "001_x.sql:1:1"),
    "deep-in-the-file": (
        "SELECT 1;\n\n-- note\nSELECT 2;\nSELECT nope FROM pg_class;\n",
        "001_x.sql:5:8",
    ),
    "after-crlf-lines": (
        "SELECT 1;\r\nSELECT 2;\r\nSELECT nope FROM pg_class;\r\n",
        "001_x.sql:3:8",
    ),
    "after-multibyte-characters": (
        "-- café, naïve, 日本\nSELECT 'ü', nope FROM pg_class;\n",
        "001_x.sql:2:13",
    ),
    "last-line-without-newline": ("SELECT 1;\nSELECT nope FROM pg_class", "001_x.sql:2:8"),
    "file-with-a-bom": ("\ufeffSELECT 1;\nSELECT nope FROM pg_class;\n", "001_x.sql:2:8"),
    "on-the-line-of-the-bom": ("\ufeffSELECT nope;\n", "001_x.sql:1:8"),
    "syntax-error": ("CREATE TABLE t (id int,);\n", "001_x.sql:1:24"),
    "syntax-error-in-a-file-that-commits": (
        "CREATE TABLE x (id int primary key;\nCOMMIT;\n",
        "001_x.sql:1:35",
    ),
    "inside-a-dollar-quoted-body": (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n  SELECT nope FROM pg_class\n$$;\n",
        "001_x.sql:2:10",
    ),
    "inside-a-plpgsql-body-with-a-tag": (
        "CREATE TABLE a (id int);\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$\n"
        "DECLARE x int;\nBEGIN\n  SELEC 1;\n  RETURN 1;\nEND;\n$body$;\n",
        "001_x.sql:5:3",
    ),
    "no-transaction-third-statement": (
        NO_TX + "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nINSERT INTO a VALUES ('x');\n",
        "001_x.sql:4:23",
    ),
    "no-transaction-after-a-concurrent-index": (
        NO_TX + "CREATE TABLE a (id int);\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n"
        "SELECT 1;\nSELECT nope FROM a;\n",
        "001_x.sql:5:8",
    ),
    "no-transaction-after-crlf-lines": (
        NO_TX.replace("\n", "\r\n")
        + "CREATE TABLE a (id int);\r\nINSERT INTO a VALUES (1, 2);\r\n",
        "001_x.sql:3:26",
    ),
    "no-transaction-after-multibyte-characters": (
        NO_TX + "CREATE TABLE ü (id int); COMMENT ON TABLE ü IS 'Ω ∑ €€€';"
        " SELECT 'é€', nope FROM ü;\n",
        "001_x.sql:2:72",
    ),
    "no-transaction-last-line-without-newline": (
        NO_TX + "CREATE TABLE a (id int);\nSELECT nope FROM a",
        "001_x.sql:3:8",
    ),
    "no-transaction-file-with-a-bom": (
        "\ufeff" + NO_TX + "SELECT 1;\nSELECT nope;\n",
        "001_x.sql:3:8",
    ),
}


@pytest.mark.parametrize(("sql", "location"), list(CASES.values()), ids=list(CASES))
async def test_error_position_maps_to_the_line_and_column_an_editor_shows(
    database_url: str, tmp_path: Path, sql: str, location: str
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_x.sql").write_bytes(sql.encode("utf-8"))
    with pytest.raises(MigrationFailedError) as failed:
        await migrate(database_url, migrations_dir=folder)
    assert failed.value.location == location
    assert str(failed.value).startswith(location)


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [
        ("abc", 0, (1, 1)),
        ("abc", 2, (1, 3)),
        ("a\nbc", 2, (2, 1)),
        ("a\nbc", 3, (2, 2)),
        ("a\n\n\nb", 4, (4, 1)),
        ("abc", 99, (1, 4)),  # past the end: the end
        ("abc", -5, (1, 1)),  # before the start (a prefix): the start
    ],
)
def test_line_and_column_of_an_offset(text: str, offset: int, expected: tuple[int, int]) -> None:
    assert line_and_column(text, offset) == expected


async def test_library_errors_name_the_keyword_argument(tmp_path: Path) -> None:
    from natlangchain_migrate import ConfigurationError

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_x.sql").write_text("SELECT 1;\n")
    with pytest.raises(ConfigurationError, match=r"in the library: target="):
        await migrate("postgresql://u@127.0.0.1:1/x", migrations_dir=folder, target=9)
    with pytest.raises(ConfigurationError, match=r"in the library: pg_lock_timeout="):
        await migrate("postgresql://u@127.0.0.1:1/x", migrations_dir=folder, pg_lock_timeout="x")


RUNTIME_CASES = {
    # The server gives no position for an error found while running: a no-transaction
    # file is located at the failing statement's first line; so is a transactional file,
    # found by a replay that is rolled back (tests/test_failure_where.py).
    "no-transaction-division-by-zero": (
        NO_TX + "CREATE TABLE t (id int);\n-- the risky one\n  SELECT 1 / 0;\n",
        "001_x.sql:4:3",
    ),
    "no-transaction-duplicate-key": (
        NO_TX + "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1);\n"
        "INSERT INTO t\n  VALUES (1);\n",
        "001_x.sql:4:1",
    ),
    "transactional-duplicate-key": (
        "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1), (1);\n",
        "001_x.sql:2:1",
    ),
}


@pytest.mark.parametrize(("sql", "location"), list(RUNTIME_CASES.values()), ids=list(RUNTIME_CASES))
async def test_a_runtime_error_is_located_as_precisely_as_the_file_allows(
    database_url: str, tmp_path: Path, sql: str, location: str
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_x.sql").write_text(sql, encoding="utf-8")
    with pytest.raises(MigrationFailedError) as failed:
        await migrate(database_url, migrations_dir=folder)
    assert failed.value.location == location
    message = str(failed.value)
    assert message.startswith(f"{location}: ")
    if "duplicate" in message:
        # The server's DETAIL is given once, labelled, and no sentence ends in "..".
        assert message.count("already exists") == 1
        assert "; detail: Key (id)=(1) already exists" in message
        assert "DETAIL" not in message
    assert ".." not in message
