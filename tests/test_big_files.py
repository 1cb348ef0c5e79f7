"""Big files: the checksum read in the pass that applies them, and lint of their statements.

A big file's checksum is not read when the migrations are loaded: applying it hashes
the bytes it sends, and the ledger row records that. Files are made "big" here by
setting STREAM_BYTES to 0 (monkeypatched), except where the CLI runs a real 5 MB file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from harness.faults.seed_files import write_insert_seed
from natlangchain_migrate import discovery, filesum, sqlscan, streamed
from natlangchain_migrate.api import migrate, status
from natlangchain_migrate.discovery import BigMigration, checksum, load_migrations
from natlangchain_migrate.errors import ConfigurationError, DriftError, ExitCode
from natlangchain_migrate.plan import State
from tests.conftest import fetchval, ledger_rows, write_migrations
from tests.test_lint import lint, project

pytestmark = pytest.mark.anyio

SEED = (
    "CREATE TABLE seed (id int PRIMARY KEY, note text);\n"
    + "".join(f"INSERT INTO seed VALUES ({i}, 'row; {i} é  '); \n" for i in range(300))
    + "\r\nCOPY seed (id, note) FROM stdin;\n"
    + "".join(f"{i}\tcopied {i}\t \n" for i in range(300, 600)).replace("\t \n", "\n")
    + "\\.\n"
    + "SELECT 1;   \n\n\n"
)


@pytest.fixture
def everything_big(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every transactional file is a big one, read a few kB at a time."""
    monkeypatch.setattr(discovery, "STREAM_BYTES", 0)
    monkeypatch.setattr(filesum, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(streamed, "PIECE_CHARS", 8192)


def _scanned_checksum(path: Path) -> str:
    (end,) = [item for item in sqlscan.scan(path, path.name) if isinstance(item, sqlscan.Scanned)]
    return end.checksum


def test_the_scans_checksum_is_the_small_files_whatever_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Line ends, trailing blanks and blank lines, a byte-order mark, non-ASCII, and
    chunks falling anywhere: the checksum from the applying pass is discovery's."""
    random.seed(11)
    parts = ["SELECT 1", ";", " ", "\t", "\r\n", "\n", "  \n", "\t\n", "é", "'x;'", "\r", "--c\n"]
    path = tmp_path / "f.sql"
    for chunk in (1, 2, 3, 7, 64, 4096):
        monkeypatch.setattr(filesum, "CHUNK_BYTES", chunk)
        for number in range(120):
            text = "".join(random.choice(parts) for _ in range(random.randint(0, 60)))
            bom = "\ufeff" if number % 4 == 0 else ""
            path.write_bytes((bom + text).encode("utf-8"))
            expected = checksum(path.read_bytes().decode("utf-8-sig"))
            assert _scanned_checksum(path) == expected, repr(text)
            assert filesum.survey(path, "f.sql").checksum == expected, repr(text)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SELECT 1;\nSELECT '\0';\n", r"f.sql:2: a NUL byte"),
        (b"SELECT 1;\nSELECT '\xff';\n", r"f.sql: not valid UTF-8 at byte 18"),
        (b"SELECT 1;\nSELECT '\xc3", r"f.sql: not valid UTF-8 at byte 18"),
    ],
)
def test_the_applying_pass_refuses_what_discovery_refuses(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    """A big file is not read at discovery, so its scan names a NUL byte or bad UTF-8."""
    path = tmp_path / "f.sql"
    path.write_bytes(raw)
    with pytest.raises(ConfigurationError, match=message):
        list(sqlscan.scan(path, "f.sql"))


async def test_a_big_file_is_not_read_when_loaded_and_its_row_has_the_small_files_checksum(
    database_url: str, tmp_path: Path, everything_big: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": SEED})
    reads: list[str] = []
    survey = filesum.survey

    def counted(entry: Any, name: str) -> filesum.Survey:
        reads.append(name)
        return survey(entry, name)

    monkeypatch.setattr(filesum, "survey", counted)
    (migration,) = load_migrations(folder)
    assert isinstance(migration, BigMigration)
    await migrate(database_url, migrations_dir=folder)
    assert reads == []  # planning a pending big file needs no checksum
    (row,) = await ledger_rows(database_url)
    assert row["checksum"] == checksum(SEED)
    assert await fetchval(database_url, "SELECT count(*) FROM seed") == 600
    # Applied, the file's checksum is read for the drift check: the same one.
    assert migration.checksum == row["checksum"]
    (entry,) = (await status(database_url, migrations_dir=folder)).entries
    assert entry.state is State.APPLIED
    assert reads  # the drift check read it


async def test_status_shows_a_pending_big_files_checksum(
    database_url: str, tmp_path: Path, everything_big: None
) -> None:
    """``--status --json`` shows every file's checksum: a pending big file is read for it."""
    from natlangchain_migrate.render import status_objects

    folder = write_migrations(tmp_path / "m", {"001_seed.sql": SEED})
    plan = await status(database_url, migrations_dir=folder)
    ((entry,), (shown,)) = plan.entries, status_objects(plan)
    assert entry.state is State.PENDING
    assert shown["checksum"] == checksum(SEED)


async def test_a_big_file_changed_after_planning_is_recorded_as_applied(
    database_url: str, tmp_path: Path, everything_big: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is edited after the run planned it, before it is read to be applied: the
    row's checksum is the edited text's (what ran), so the next run sees no drift."""
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": SEED})
    path = folder / "001_seed.sql"
    edited = SEED + "CREATE TABLE added_late (id int);\n"
    original = streamed.run_streamed

    async def edit_then_run(*args: Any, **kwargs: Any) -> None:
        path.write_text(edited, encoding="utf-8")
        await original(*args, **kwargs)

    monkeypatch.setattr("natlangchain_migrate.streamed.run_streamed", edit_then_run)
    await migrate(database_url, migrations_dir=folder)
    (row,) = await ledger_rows(database_url)
    assert row["checksum"] == checksum(edited) != checksum(SEED)
    assert await fetchval(database_url, "SELECT to_regclass('added_late') IS NOT NULL")
    monkeypatch.setattr("natlangchain_migrate.streamed.run_streamed", original)
    assert (await migrate(database_url, migrations_dir=folder)).applied == []


async def test_an_applied_big_file_edited_later_is_drift(
    database_url: str, tmp_path: Path, everything_big: None
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": SEED})
    await migrate(database_url, migrations_dir=folder)
    (folder / "001_seed.sql").write_text(SEED.replace("row; 7 ", "row; 8 "), encoding="utf-8")
    with pytest.raises(DriftError, match="migration 001 was applied with a different checksum"):
        await migrate(database_url, migrations_dir=folder)


# --- lint ----------------------------------------------------------------------------

RISKY = (
    "ALTER TABLE accounts ADD COLUMN plan text NOT NULL;\n"
    "INSERT INTO seed (id, name, body) VALUES (-1, 'x', 'y'); CREATE INDEX accounts_plan "
    "ON accounts (plan);\n"
)


def _big_file(path: Path, tail: str) -> tuple[int, str]:
    """A 5 MB file of INSERTs, a COPY section, then ``tail``; the line ``tail`` starts on."""
    write_insert_seed(path, 5 << 20)
    with path.open("a", encoding="utf-8") as file:
        file.write("COPY seed (id, name, body) FROM stdin;\n-2\ta\tb\n-3\tc\td\n\\.\n")
        file.write("UPDATE seed SET name = 'z' WHERE id = -2;\n")
        file.write(tail)
    text = path.read_text(encoding="utf-8")
    return text[: text.index(tail)].count("\n") + 1, text


def test_lint_sees_a_risky_statement_after_the_data_of_a_big_file(tmp_path: Path) -> None:
    """The CLI lints a real streamed file: the DDL after 5 MB of data is found, at the
    file's own lines and columns (one after an INSERT on the same line too)."""
    folder = project(tmp_path, {"001_accounts.sql": "CREATE TABLE accounts (id bigint);\n"})
    line, text = _big_file(folder / "002_seed.sql", RISKY)
    assert (folder / "002_seed.sql").stat().st_size >= discovery.STREAM_BYTES
    result = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr
    found = [(f["rule"], f["line"], f["column"]) for f in json.loads(result.stdout)["findings"]]
    index_column = RISKY.split("\n")[1].index("CREATE INDEX") + 1
    assert found == [
        ("adding-required-field", line, 22),
        ("require-concurrent-index-creation", line + 1, index_column),
    ]
    assert "INSERT" in text  # the data was there, and skipped


def test_lint_of_a_streamed_file_finds_what_it_finds_in_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed or read whole, one file gets the same findings at the same places."""
    from natlangchain_migrate.lint import lint_migrations, locate_squawk
    from natlangchain_migrate.lint_config import LintConfig

    text = (
        "-- natlangchain: lint-ignore ban-drop-column kept on purpose\n"
        "CREATE TABLE other (id bigint);\n"
        "INSERT INTO accounts VALUES (1, 'a;b'), (2, E'it\\'s');  ALTER TABLE accounts\n"
        "  ADD COLUMN plan text NOT NULL;\n"
        "COPY accounts (id) FROM stdin;\n3\n\\.\n"
        "/* a comment; */ CREATE INDEX accounts_plan ON accounts (plan);\n"
        "WITH x AS (SELECT 1) SELECT * FROM x;\n"
        "-- squawk-ignore require-concurrent-index-creation\n"
        "CREATE INDEX accounts_id ON accounts (id);\n"
        "ALTER TABLE accounts DROP COLUMN old;\n"
    )
    squawk = locate_squawk()
    config = LintConfig()
    # Read whole, with the COPY section's three lines left blank (squawk cannot read rows).
    blanked = text.replace("COPY accounts (id) FROM stdin;\n3\n\\.\n", "\n\n\n")
    (whole,) = load_migrations(write_migrations(tmp_path / "w", {"001_a.sql": blanked}))
    assert whole.source is None
    monkeypatch.setattr(discovery, "STREAM_BYTES", 0)
    big = load_migrations(write_migrations(tmp_path / "m", {"001_a.sql": text}))
    assert big[0].source is not None
    expected = lint_migrations([whole], config, shown_dir="m", squawk=squawk)
    assert [(f.rule, f.line) for f in expected] == [
        ("adding-required-field", 4),
        ("require-concurrent-index-creation", 8),
    ]
    assert lint_migrations(big, config, shown_dir="m", squawk=squawk) == expected
