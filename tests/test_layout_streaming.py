"""Other tools' whole up files streamed as ours are: golang-migrate's and sqlx's
``.up.sql``, Flyway's ``V`` files and prisma's ``<folder>/migration.sql``, when 4 MiB or
more or with COPY ... FROM stdin data sections. The checksum is the file's whole-read one,
errors name the file as the folder names it, and a BEGIN; ... COMMIT; wrapper on such a
file is refused before anything runs (it is not taken off in pieces).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natlangchain_migrate.discovery import STREAM_BYTES, checksum, load_migrations, read_text
from natlangchain_migrate.errors import ExitCode
from tests.conftest import fetchval, ledger_rows, run_cli, table_names, write_migrations

_ROWS = (
    "CREATE TABLE t1 (id int PRIMARY KEY, v text);\n"
    "COPY t1 (id, v) FROM stdin;\n1\tone  \n2\t\\N\n3\ttab\\there é\n\\.\n"
    "INSERT INTO t1 VALUES (4, 'four');   \n\n\n"
)
# The up file's name as the folder names it, per layout.
COPY_FILES = [
    "1_a.up.sql",
    "20240101120000_a/migration.sql",
    "V1__a.sql",
]
IDS = ["golang-migrate", "prisma", "flyway"]


def _flags(folder: Path, *more: str) -> tuple[str, ...]:
    return ("--migrations-dir", str(folder), *more)


@pytest.mark.parametrize("name", COPY_FILES, ids=IDS)
def test_a_copy_data_section_applies_in_another_tools_layout(
    database_url: str, tmp_path: Path, name: str
) -> None:
    folder = write_migrations(tmp_path / "m", {name: _ROWS})
    (migration,) = load_migrations(folder)
    assert migration.source is not None  # streamed, as in our own layout
    assert migration.filename == name
    assert migration.checksum == checksum(_ROWS)  # what the file read whole gets
    for flags in (("--dry-run",), ("--status",)):
        result = run_cli(*_flags(folder, *flags), database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert asyncio.run(table_names(database_url)) == set()  # --dry-run wrote nothing
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    rows = asyncio.run(
        fetchval(database_url, "SELECT string_agg(coalesce(v, 'NULL'), ',' ORDER BY id) FROM t1")
    )
    assert rows == "one  ,NULL,tab\there é,four"
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(_ROWS)
    # Applied, it is no drift: --status and a second run agree with the ledger.
    again = run_cli(*_flags(folder, "--check"), database_url=database_url)
    assert again.returncode == 0, again.stderr


def test_a_bad_copy_row_is_named_by_the_file_as_the_folder_names_it(
    database_url: str, tmp_path: Path
) -> None:
    name = "20240101120000_a/migration.sql"
    text = _ROWS.replace("2\t\\N\n", "two\tx\n")
    folder = write_migrations(tmp_path / "m", {name: text})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    assert f"{name}:4" in result.stderr
    assert asyncio.run(table_names(database_url)) == {"schema_migrations"}
    assert asyncio.run(ledger_rows(database_url)) == []


def _big_up(path: Path, *, bad: bool) -> tuple[int, int]:
    """A golang-migrate up file over STREAM_BYTES: a table and INSERTs; with ``bad``, an
    INSERT into a missing table near its end. Returns the rows and the bad line."""
    lines = ["CREATE TABLE big (id int PRIMARY KEY, pad text);"]
    pad = "x" * 200
    rows = 0
    size = 0
    while size < STREAM_BYTES + (64 << 10):
        values = ",".join(f"({rows + i}, '{pad}')" for i in range(100))
        lines.append(f"INSERT INTO big VALUES {values};")
        size += len(lines[-1]) + 1
        rows += 100
    bad_line = len(lines) - 2
    if bad:
        lines.insert(bad_line - 1, "INSERT INTO missing VALUES (1);")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows, bad_line


def test_a_big_golang_migrate_file_streams_all_or_nothing(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"1_small.up.sql": "CREATE TABLE small (id int);", "1_small.down.sql": "DROP TABLE small;"},
    )
    path = folder / "2_seed.up.sql"
    _, bad_line = _big_up(path, bad=True)
    (folder / "2_seed.down.sql").write_text("DROP TABLE big;\n", encoding="utf-8")
    migrations = load_migrations(folder)
    assert migrations[1].source is not None
    assert migrations[1].checksum == checksum(read_text(path))
    result = run_cli(*_flags(folder, "--dry-run"), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "  2_seed\n" in result.stdout
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr[-2000:]
    assert f"2_seed.up.sql:{bad_line}" in result.stderr
    assert asyncio.run(table_names(database_url)) == {"small", "schema_migrations"}
    assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1]
    rows, _ = _big_up(path, bad=False)
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM big")) == rows
    recorded = asyncio.run(ledger_rows(database_url))[1]["checksum"]
    assert recorded == checksum(read_text(path))
    status = run_cli(*_flags(folder, "--status"), database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert run_cli(*_flags(folder, "--check"), database_url=database_url).returncode == 0


@pytest.mark.parametrize("big", [False, True], ids=["copy", "big"])
@pytest.mark.parametrize(
    "name", ["1_a.up.sql", "20240101120000_a/migration.sql"], ids=["golang-migrate", "prisma"]
)
def test_a_wrapped_streamed_file_runs_its_body_in_the_runners_transaction(
    database_url: str, tmp_path: Path, name: str, big: bool
) -> None:
    """golang-migrate's and prisma's BEGIN; ... COMMIT; around the whole file is left out
    of the streamed body, as when the file is read whole; the checksum stays the file's."""
    text = f"-- seed\nBEGIN;\n{_ROWS}COMMIT;\n-- done\n"
    folder = write_migrations(tmp_path / "m", {name: text})
    path = folder / name
    if big:
        _big_up(path, bad=False)
        text = f"-- seed\nBEGIN;\n{read_text(path)}{_ROWS.replace('t1', 't2')}COMMIT;\n"
        path.write_text(text, encoding="utf-8")
    dry = run_cli(*_flags(folder, "--dry-run"), database_url=database_url)
    assert dry.returncode == 0, dry.stderr[-2000:]
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr[-2000:]
    table = "t2" if big else "t1"
    assert asyncio.run(fetchval(database_url, f"SELECT count(*) FROM {table}")) == 4
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(text)


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (f"BEGIN;\n{_ROWS}COMMIT;\nSELECT 1;\n", 12, "a statement after the COMMIT;"),
        (f"BEGIN;\n{_ROWS}", 1, "BEGIN; opens the file with no COMMIT; at its end"),
        (f"SELECT 1;\nBEGIN;\n{_ROWS}COMMIT;\n", 2, "BEGIN controls the transaction"),
        (f"BEGIN ISOLATION LEVEL SERIALIZABLE;\n{_ROWS}COMMIT;\n", 1, "BEGIN controls"),
    ],
    ids=["after-commit", "no-commit", "begin-later", "begin-options"],
)
def test_anything_but_a_whole_file_wrapper_is_refused_in_a_streamed_file(
    database_url: str, tmp_path: Path, text: str, line: int, says: str
) -> None:
    """Refused when the scan meets it: the file's transaction is rolled back, exit 2."""
    folder = write_migrations(tmp_path / "m", {"1_a.up.sql": text})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr[-2000:]
    assert f"1_a.up.sql:{line}: {says}" in result.stderr
    assert asyncio.run(table_names(database_url)) <= {"schema_migrations"}
    assert asyncio.run(ledger_rows(database_url)) == []


def test_a_no_transaction_or_down_file_is_read_whole(tmp_path: Path) -> None:
    """sqlx's -- no-transaction file and a down file stay read whole, as before."""
    folder = write_migrations(
        tmp_path / "m",
        {
            "natlangchain-migrate.toml": 'layout = "sqlx"\n',
            "1_a.up.sql": f"-- no-transaction\n{_ROWS}",
            "1_a.down.sql": _ROWS,
        },
    )
    (migration,) = load_migrations(folder)
    assert migration.source is None
    assert migration.directives.no_transaction
    assert migration.down_sql == _ROWS


def test_adopt_from_golang_migrate_and_drift_agree_on_a_streamed_files_checksum(
    database_url: str, tmp_path: Path
) -> None:
    """golang-migrate applied the COPY file; adopting records the checksum the streamed
    path computes, which is the whole-read one: no drift, and an edited row is drift."""
    from harness.servers.sql import execute

    name = "1_a.up.sql"
    folder = write_migrations(tmp_path / "m", {name: _ROWS, "1_a.down.sql": "DROP TABLE t1;"})
    by_tool = _ROWS.split("COPY", 1)[0] + (
        "INSERT INTO t1 VALUES (1, 'one  '), (2, NULL), (3, E'tab\\there é'), (4, 'four');"
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, "
        "dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false);"
    )
    asyncio.run(execute(database_url, by_tool))
    adopted = run_cli(
        "adopt", "--from", "golang-migrate", *_flags(folder), database_url=database_url
    )
    assert adopted.returncode == 0, adopted.stderr
    recorded = asyncio.run(
        fetchval(database_url, "SELECT checksum FROM natlangchain_migrations WHERE version = 1")
    )
    assert recorded == checksum(_ROWS)
    up = run_cli(*_flags(folder), database_url=database_url)
    assert up.returncode == 0, up.stderr
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM t1")) == 4
    (folder / name).write_text(_ROWS.replace("1\tone", "1\tuno"), encoding="utf-8")
    drift = run_cli(*_flags(folder), database_url=database_url)
    assert drift.returncode == ExitCode.DRIFT, drift.stderr
    assert name in drift.stderr


@pytest.mark.parametrize(
    ("files", "up"),
    [
        ({"natlangchain-migrate.toml": 'layout = "sqlx"\n'}, "1_seed.sql"),
        ({}, "V1__seed.sql"),
        ({}, "20240101120000_seed/migration.sql"),
        ({}, "1_seed.up.sql"),
    ],
    ids=["sqlx", "flyway", "prisma", "golang-migrate"],
)
def test_discovery_reads_only_a_head_of_a_big_up_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], up: str
) -> None:
    """Loading the folder never reads the big file whole; its checksum, asked for, is
    read in chunks and equals the whole-read one."""
    from natlangchain_migrate import discovery

    folder = write_migrations(tmp_path / "m", files)
    path = folder / up
    path.parent.mkdir(exist_ok=True)
    _big_up(path, bad=False)
    whole = checksum(read_text(path))
    real = discovery.read_text

    def spy(entry: object) -> str:
        assert not str(entry).endswith(up), f"{up} was read whole"
        return real(entry)  # type: ignore[arg-type]

    monkeypatch.setattr(discovery, "read_text", spy)
    monkeypatch.setattr(discovery, "text_of", lambda entry, read: spy(entry))
    (migration,) = load_migrations(folder)
    assert migration.source is not None
    assert migration.filename == up
    assert migration.checksum == whole


@pytest.mark.slow
def test_a_100_mb_golang_migrate_file_applies_under_an_address_space_smaller_than_it(
    database_url: str, tmp_path: Path
) -> None:
    """As tests/test_data_memory.py for our layout: RLIMIT_AS of 96 MB, set for the
    runner's process alone, below the file's 100 MB."""

    from harness.faults.seed_files import write_insert_seed
    from tests.test_data_memory import FILE_BYTES, run_limited

    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "1_seed.up.sql"
    rows = write_insert_seed(path, FILE_BYTES)
    (folder / "1_seed.down.sql").write_text("DROP TABLE seed;\n", encoding="utf-8")
    run = run_limited(folder, database_url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM seed")) == rows
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", COPY_FILES, ids=IDS)
def test_lint_reads_a_streamed_file_of_another_tools_layout(tmp_path: Path, name: str) -> None:
    """lint reads it as it reads ours (its statements that are not data), and names the
    file as the folder does (prisma's nested name made lint's scratch copy fail)."""
    from tests.test_lint import findings, lint, project

    text = f"{_ROWS}ALTER TABLE t1 ADD COLUMN c int NOT NULL;\n"
    folder = project(tmp_path, {name: text})
    result = lint("--migrations-dir", str(folder), "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr[-2000:]
    found = {(f["file"], f["line"], f["rule"]) for f in findings(result)}
    assert (f"migrations/{name}", 10, "prefer-bigint-over-int") in found, found


@pytest.mark.parametrize(
    ("up", "down"),
    [
        ("1_a.up.sql", "1_a.down.sql"),
        ("20240101120000_a/migration.sql", "20240101120000_a/down.sql"),
    ],
    ids=["golang-migrate", "prisma"],
)
def test_a_streamed_files_down_file_rolls_it_back_and_verify_runs_it(
    database_url: str, tmp_path: Path, up: str, down: str
) -> None:
    """The down file is read whole, as before; verify runs the streamed file up, down
    and up again on a scratch database."""
    folder = write_migrations(tmp_path / "m", {up: _ROWS, down: "DROP TABLE t1;\n"})
    checked = run_cli("verify", *_flags(folder), database_url=database_url)
    assert checked.returncode == ExitCode.OK, checked.stderr[-2000:]
    assert run_cli(*_flags(folder), database_url=database_url).returncode == 0
    back = run_cli("--rollback", *_flags(folder), database_url=database_url)
    assert back.returncode == 0, back.stderr[-2000:]
    assert asyncio.run(table_names(database_url)) == {"schema_migrations"}
    assert asyncio.run(ledger_rows(database_url)) == []


def test_lint_of_a_wrapped_streamed_file_reports_no_transaction_nesting(tmp_path: Path) -> None:
    """The accepted wrapper is left out of what squawk reads, as for a small file."""
    from tests.test_lint import findings, lint, project

    name = "20240101120000_a/migration.sql"
    text = f"BEGIN;\n{_ROWS}ALTER TABLE t1 ADD COLUMN c int NOT NULL;\nCOMMIT;\n"
    folder = project(tmp_path, {name: text})
    result = lint("--migrations-dir", str(folder), "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr[-2000:]
    found = {(f["line"], f["rule"]) for f in findings(result)}
    assert (11, "prefer-bigint-over-int") in found, found
    assert not {rule for _, rule in found} & {"transaction-nesting"}, found
