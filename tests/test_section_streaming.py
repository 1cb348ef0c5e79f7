"""goose's, dbmate's and node-pg-migrate's files of up and down sections: the up section of
a big file (or one with COPY data) is streamed as a whole up file is (section_stream.py).
The sections are those the whole read finds, the checksum is the whole read's, errors
name the file's own lines, goose's StatementBegin/End blocks go whole, and the refusals
are the whole read's, before anything runs. The down section is read whole when it runs.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from natlangchain_migrate import discovery
from natlangchain_migrate.discovery import STREAM_BYTES, checksum, load_migrations, read_text
from natlangchain_migrate.errors import ConfigurationError, ExitCode
from natlangchain_migrate.layouts import SECTIONS
from natlangchain_migrate.section_stream import Section
from tests.conftest import fetchval, ledger_rows, run_cli, table_names, write_migrations

LAYOUTS = ["goose", "dbmate", "node-pg-migrate"]
MARKERS = {
    "goose": ("-- +goose Up\n", "-- +goose Down\n"),
    "dbmate": ("-- migrate:up\n", "-- migrate:down\n"),
    "node-pg-migrate": ("-- Up Migration\n", "-- Down Migration\n"),
}
# goose sends a StatementBegin ... StatementEnd block whole: a SQL-standard function body
# has semicolons that no scanner may split at (its END; would read as a COMMIT).
_BLOCK = (
    "-- +goose StatementBegin\n"
    "CREATE FUNCTION two() RETURNS int LANGUAGE sql\n"
    "BEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n"
    "-- +goose StatementEnd\n"
)


def _whole_up(layout: str, path: Path) -> str:
    """The up section as the whole read finds it (layout_sections.py)."""
    return SECTIONS[layout](path, read_text(path)).up_sql


def _flags(folder: Path, *more: str) -> tuple[str, ...]:
    return ("--migrations-dir", str(folder), *more)


def _big(layout: str, path: Path, *, bad: str | None = None) -> tuple[int, int]:
    """A file over STREAM_BYTES in ``layout``: a comment and the up marker, a table, a
    COPY data section, goose's block, INSERTs, then the down section. ``bad`` puts a bad
    COPY row (``copy``), or near the end an INSERT into a missing table (``insert``: the
    error has a position) or of a key that is there (``duplicate``: it has none, the file
    is run again to find it) in it.
    Returns the rows and the bad line (the file's own)."""
    up, down = MARKERS[layout]
    lines = ["-- seed data, written by hand", up.rstrip("\n")]
    lines.append("CREATE TABLE big (id int PRIMARY KEY, pad text);")
    lines.append("COPY big (id, pad) FROM stdin;")
    copy_rows = ["-1\tone  ", "-2\t\\N", "-3\ttab\\there é"]
    if bad == "copy":
        copy_rows[1] = "two\tx"
    bad_line = len(lines) + 2 if bad == "copy" else 0
    lines += [*copy_rows, "\\."]
    if layout == "goose":
        lines += _BLOCK.rstrip("\n").split("\n")
    pad = "x" * 200
    rows = 3
    size = 0
    while size < STREAM_BYTES + (64 << 10):
        values = ",".join(f"({rows + i}, '{pad}')" for i in range(100))
        lines.append(f"INSERT INTO big VALUES {values};")
        size += len(lines[-1]) + 1
        rows += 100
    if bad in ("insert", "duplicate"):  # a position in the error, or none (found again)
        wrong = (
            "INSERT INTO missing VALUES (1);" if bad == "insert" else "INSERT INTO big VALUES (5);"
        )
        lines.insert(len(lines) - 2, wrong)
        bad_line = len(lines) - 2
    lines.append(down.rstrip("\n"))
    lines.append("DROP TABLE big;" + (" DROP FUNCTION two();" if layout == "goose" else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows - 3, bad_line


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_big_sectioned_file_streams_all_or_nothing_and_names_its_own_lines(
    database_url: str, tmp_path: Path, layout: str
) -> None:
    up, down = MARKERS[layout]
    folder = write_migrations(
        tmp_path / "m",
        {"1_small.sql": f"{up}CREATE TABLE small (id int);\n{down}DROP TABLE small;\n"},
    )
    path = folder / "2_seed.sql"
    for bad in ("insert", "duplicate", "copy"):
        _, bad_line = _big(layout, path, bad=bad)
        (migration,) = load_migrations(folder)[1:]
        assert isinstance(migration.source, Section)
        result = run_cli(*_flags(folder), database_url=database_url)
        assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr[-2000:]
        assert f"2_seed.sql:{bad_line}" in result.stderr, (bad, result.stderr[-2000:])
        assert asyncio.run(table_names(database_url)) == {"small", "schema_migrations"}
        assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1]
    rows, _ = _big(layout, path)
    (migration,) = load_migrations(folder)[1:]
    assert migration.checksum == checksum(_whole_up(layout, path))
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM big")) == rows + 3
    copied = "SELECT string_agg(coalesce(pad, 'NULL'), ',' ORDER BY id DESC) FROM big WHERE id < 0"
    assert asyncio.run(fetchval(database_url, copied)) == "one  ,NULL,tab\there é"
    if layout == "goose":
        assert asyncio.run(fetchval(database_url, "SELECT two()")) == 2
    recorded = asyncio.run(ledger_rows(database_url))[1]["checksum"]
    assert recorded == checksum(_whole_up(layout, path))
    assert run_cli(*_flags(folder, "--check"), database_url=database_url).returncode == 0
    # The down section, read whole, rolls it back.
    back = run_cli("--rollback", *_flags(folder), database_url=database_url)
    assert back.returncode == 0, back.stderr[-2000:]
    assert asyncio.run(table_names(database_url)) == {"small", "schema_migrations"}


# Files whose up section the chunked scan must find exactly where the whole read does.
_VARIANTS = {
    "plain": "{up}CREATE TABLE a (id int);\n{down}DROP TABLE a;\n",
    "crlf-blanks": (
        "-- top  \r\n{up_crlf}CREATE TABLE a (id int);  \r\n\r\n{down_crlf}DROP TABLE a;\r\n"
    ),
    "bom-above": "\ufeff-- about it\n\n{up}CREATE TABLE a (v text);\nINSERT INTO a VALUES ('é');\n",
    "down-first": "{down}DROP TABLE a;\n{up}CREATE TABLE a (id int);\n\n\n",
    "copy": (
        "{up}CREATE TABLE t (a int, b text);\nCOPY t FROM stdin;\n1\tx \n\\.\n{down}DROP TABLE t;\n"
    ),
    "empty-down": "{up}CREATE TABLE a (id int);\n{down}",
    # The markers' words in data: each such line is read as a marker may be.
    "mentions": (
        "{up}CREATE TABLE a (v text);\nINSERT INTO a VALUES ('+goose Up migrate:up'),"
        " ('-- Up Migration x'), ('Migration migration');\n{down}DROP TABLE a;\n"
    ),
    # Lines that str.splitlines ends where \n does not (a form feed, a lone \r).
    "other-breaks": "{up}CREATE TABLE a (id int);\x0c\n-- x\r\n\r{down}DROP TABLE a;\n",
    # A marker line inside a dollar-quoted body is a marker, as the tools read it.
    "marker-in-body": "{up}CREATE FUNCTION f() RETURNS int AS $$\n{down}SELECT 1 $$;\n",
    "indented": "  {up}CREATE TABLE a (id int);\n\t{down}DROP TABLE a;",
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_streamed_sections_are_the_whole_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, variant: str
) -> None:
    """Every file streamed (the threshold at a byte): the checksum, the down section and
    the lines are those of the file read whole."""
    up, down = MARKERS[layout]
    text = _VARIANTS[variant].format(
        up=up, down=down, up_crlf=up.replace("\n", "\r\n"), down_crlf=down.replace("\n", "\r\n")
    )
    if layout == "node-pg-migrate" and variant == "indented":
        text = text.replace("\t-- Down", "-- Down")  # node-pg-migrate's test: no tab
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "1_a.sql"
    path.write_bytes(text.encode("utf-8"))
    whole = SECTIONS[layout](path, read_text(path))
    (read,) = load_migrations(folder)
    assert read.source is None or variant == "copy"
    monkeypatch.setattr(discovery, "STREAM_BYTES", 1)
    (streamed,) = load_migrations(folder)
    assert isinstance(streamed.source, Section)
    assert streamed.checksum == checksum(whole.up_sql) == read.checksum
    assert streamed.down_sql == read.down_sql
    if variant == "empty-down":  # nothing to undo (dbmate's whole file was read as its down)
        assert read.down_sql == ""
    from natlangchain_migrate.sqlscan import Sql, scan

    first = next(item for item in scan(streamed.source, "1_a.sql") if isinstance(item, Sql))
    line = text[: text.index("CREATE")].count("\n") + 1
    assert first.line + first.text.count("\n", 0, first.text.index("CREATE")) == line


def test_a_node_pg_migrate_file_without_markers_streams_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_migrations(tmp_path / "m", {"1_a.sql": "CREATE TABLE a (id int);\n"})
    (folder / "natlangchain-migrate.toml").write_text('layout = "node-pg-migrate"\n')
    monkeypatch.setattr(discovery, "STREAM_BYTES", 1)
    (migration,) = load_migrations(folder)
    assert isinstance(migration.source, Section)
    assert migration.checksum == checksum("CREATE TABLE a (id int);\n")
    assert migration.down_sql is None


def test_node_pg_migrates_markers_in_any_case_unicode_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's case-blind test, the whole read's, takes U+0131 and U+0130 for i."""
    text = "-- Up M\u0131gration\nCREATE TABLE a (id int);\n-- DOWN M\u0130GRATION\nDROP TABLE a;\n"
    folder = write_migrations(tmp_path / "m", {"1_a.sql": text})
    (folder / "natlangchain-migrate.toml").write_text('layout = "node-pg-migrate"\n')
    (read,) = load_migrations(folder)
    assert read.checksum == checksum("CREATE TABLE a (id int);\n")
    monkeypatch.setattr(discovery, "STREAM_BYTES", 1)
    (streamed,) = load_migrations(folder)
    assert isinstance(streamed.source, Section)
    assert (streamed.checksum, streamed.down_sql) == (read.checksum, read.down_sql)


@pytest.mark.parametrize(
    ("layout", "text"),
    [
        ("goose", "-- +goose Up\nSELECT 1;\n-- +goose ENVSUB ON\nSELECT 2;\n"),
        ("goose", "-- +goose Up\nSELECT 1;\n-- +goose Sideways\n"),
        ("goose", "-- +goose Up\nSELECT 1;\n-- +goose Up\n"),
        ("goose", "-- +goose Down\nSELECT 1;\n"),
        ("dbmate", "-- migrate:up transaction:maybe\nSELECT 1;\n"),
        ("dbmate", "-- migrate:up\nSELECT 1;\n-- migrate:up\n"),
        ("dbmate", "-- migrate:down\nSELECT 1;\n"),
        ("node-pg-migrate", "-- Up Migration\nSELECT 1;\n-- up migration\n"),
        ("node-pg-migrate", "SELECT 1;\n-- Down Migration\nSELECT 2;\n"),
    ],
    ids=[
        "goose-envsub",
        "goose-unknown",
        "goose-second-up",
        "goose-no-up",
        "dbmate-option",
        "dbmate-second-up",
        "dbmate-no-up",
        "node-pg-second-up",
        "node-pg-down-only",
    ],
)
def test_the_streamed_scan_refuses_what_the_whole_read_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, text: str
) -> None:
    folder = write_migrations(tmp_path / "m", {"1_a.sql": text})
    (folder / "natlangchain-migrate.toml").write_text(f'layout = "{layout}"\n')
    with pytest.raises(ConfigurationError) as whole:
        load_migrations(folder)
    monkeypatch.setattr(discovery, "STREAM_BYTES", 1)
    with pytest.raises(ConfigurationError) as streamed:
        load_migrations(folder)
    assert str(streamed.value) == str(whole.value)


def test_a_refusal_at_the_end_of_a_big_goose_file_comes_before_anything_runs(
    database_url: str, tmp_path: Path
) -> None:
    up, _ = MARKERS["goose"]
    folder = write_migrations(
        tmp_path / "m", {"1_small.sql": f"{up}CREATE TABLE small (id int);\n"}
    )
    path = folder / "2_seed.sql"
    _big("goose", path)
    with path.open("a", encoding="utf-8") as file:
        file.write("-- +goose ENVSUB ON\n")
    lines = path.read_text(encoding="utf-8").count("\n")
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr[-2000:]
    assert f"2_seed.sql:{lines}: goose's ENVSUB" in result.stderr
    assert asyncio.run(table_names(database_url)) <= {"schema_migrations"}
    (folder / "2_seed.sql").unlink()
    (folder / "3_go.go").write_text("package migrations\n", encoding="utf-8")
    _big("goose", folder / "2_seed.sql")
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr[-2000:]
    assert "3_go.go is a goose Go migration" in result.stderr
    assert asyncio.run(table_names(database_url)) <= {"schema_migrations"}


@pytest.mark.parametrize(
    ("layout", "up"),
    [
        ("goose", "-- +goose Up\n-- +goose NO TRANSACTION\n"),
        ("dbmate", "-- migrate:up transaction:false\n"),
    ],
    ids=["goose", "dbmate"],
)
def test_a_big_no_transaction_section_is_read_whole(tmp_path: Path, layout: str, up: str) -> None:
    """Run statement by statement, journalled, as a no-transaction file of ours."""
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "1_seed.sql"
    _big(layout, path)
    path.write_text(path.read_text(encoding="utf-8").replace(MARKERS[layout][0], up, 1))
    (migration,) = load_migrations(folder)
    assert migration.source is None
    assert migration.directives.no_transaction
    assert migration.checksum == checksum(_whole_up(layout, path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_discovery_reads_only_chunks_of_a_big_sectioned_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "1_seed.sql"
    _big(layout, path)
    whole = checksum(_whole_up(layout, path))
    real = discovery.read_text

    def spy(entry: object) -> str:
        assert not str(entry).endswith("1_seed.sql"), "1_seed.sql was read whole"
        return real(entry)  # type: ignore[arg-type]

    monkeypatch.setattr(discovery, "read_text", spy)
    monkeypatch.setattr(discovery, "text_of", lambda entry, read: spy(entry))
    (migration,) = load_migrations(folder)
    assert isinstance(migration.source, Section)
    assert migration.checksum == whole


def test_adopt_from_goose_and_drift_agree_on_a_streamed_sections_checksum(
    database_url: str, tmp_path: Path
) -> None:
    """goose applied the file; adopting records the checksum of its up section as the
    whole read computes it: no drift; an edited COPY row is drift."""
    from harness.servers.sql import execute

    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "1_seed.sql"
    _big("goose", path)
    by_goose = (
        "CREATE TABLE big (id int PRIMARY KEY, pad text);"
        "CREATE TABLE goose_db_version (id integer PRIMARY KEY GENERATED BY DEFAULT AS "
        "IDENTITY, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp "
        "NOT NULL DEFAULT now()); INSERT INTO goose_db_version (version_id, is_applied) "
        "VALUES (0, true), (1, true);"
    )
    asyncio.run(execute(database_url, by_goose))
    adopted = run_cli("adopt", "--from", "goose", *_flags(folder), database_url=database_url)
    assert adopted.returncode == 0, adopted.stderr[-2000:]
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(_whole_up("goose", path))
    assert run_cli(*_flags(folder), database_url=database_url).returncode == 0
    path.write_text(path.read_text(encoding="utf-8").replace("-1\tone", "-1\tuno", 1))
    drift = run_cli(*_flags(folder), database_url=database_url)
    assert drift.returncode == ExitCode.DRIFT, drift.stderr[-2000:]
    assert "1_seed.sql" in drift.stderr


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_small_sectioned_file_with_copy_data_applies(
    database_url: str, tmp_path: Path, layout: str
) -> None:
    """A COPY data section streams whatever the file's size, as in the other layouts."""
    up, down = MARKERS[layout]
    rows = "CREATE TABLE t1 (id int, v text);\nCOPY t1 (id, v) FROM stdin;\n1\tone\n2\tbad\n\\.\n"
    if layout == "dbmate":  # the down section's option, read with it
        down = down.replace("down", "down transaction:false")
    text = f"-- top\n{up}{rows}{down}DROP TABLE t1;\n"
    folder = write_migrations(tmp_path / "m", {"1_a.sql": text.replace("2\tbad", "x\tbad")})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr[-2000:]
    assert "1_a.sql:6" in result.stderr
    (folder / "1_a.sql").write_text(text, encoding="utf-8")
    checked = run_cli("verify", *_flags(folder), database_url=database_url)  # up, down, up
    assert checked.returncode == ExitCode.OK, checked.stderr[-2000:]
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM t1")) == 2
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(_whole_up(layout, folder / "1_a.sql"))
    back = run_cli("--rollback", *_flags(folder), database_url=database_url)
    assert back.returncode == 0, back.stderr[-2000:]
    assert asyncio.run(table_names(database_url)) == {"schema_migrations"}


@pytest.mark.slow
def test_a_100_mb_goose_file_applies_under_an_address_space_smaller_than_it(
    database_url: str, tmp_path: Path
) -> None:
    """As tests/test_data_memory.py for our layout: RLIMIT_AS of 96 MB for the runner."""
    from harness.faults.seed_files import write_insert_seed
    from tests.test_data_memory import FILE_BYTES, run_limited

    folder = tmp_path / "m"
    folder.mkdir()
    seed = tmp_path / "seed.sql"
    rows = write_insert_seed(seed, FILE_BYTES)
    path = folder / "1_seed.sql"
    with path.open("wb") as file, seed.open("rb") as source:
        file.write(b"-- +goose Up\n")
        shutil.copyfileobj(source, file)
        file.write(b"-- +goose Down\nDROP TABLE seed;\n")
    seed.unlink()
    run = run_limited(folder, database_url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM seed")) == rows
    (row,) = asyncio.run(ledger_rows(database_url))
    assert row["checksum"] == checksum(_whole_up("goose", path))


@pytest.mark.parametrize(
    ("name", "up"),
    [
        ("1_a.sql", "-- +goose Up\n-- +goose NO TRANSACTION\n"),
        ("1_a.sql", "-- migrate:up transaction:false\n"),
        ("001_a.sql", "-- natlangchain: no-transaction\n"),
    ],
    ids=["goose", "dbmate", "ours"],
)
def test_copy_rows_in_a_no_transaction_section_are_refused_before_anything_runs(
    database_url: str, tmp_path: Path, name: str, up: str
) -> None:
    """Streamed rows need the file's transaction: the refusal says so, not to add them."""
    rows = "CREATE TABLE t1 (id int, v text);\nCOPY t1 (id, v) FROM stdin;\n1\tone\n\\.\n"
    folder = write_migrations(tmp_path / "m", {name: f"{up}{rows}"})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr[-2000:]
    assert f"{name}:" in result.stderr
    assert "and this one runs without a transaction; move the COPY" in result.stderr
    assert "add them" not in result.stderr
    assert asyncio.run(table_names(database_url)) <= {"schema_migrations"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lint_reads_a_streamed_section_at_the_files_own_lines(tmp_path: Path, layout: str) -> None:
    from tests.test_lint import findings, lint, project

    up, down = MARKERS[layout]
    rows = "CREATE TABLE t1 (id bigint, v text);\nCOPY t1 (id, v) FROM stdin;\n1\tone\n\\.\n"
    text = f"-- top\n\n{up}{rows}ALTER TABLE t1 ADD COLUMN c int;\n{down}DROP TABLE t1;\n"
    folder = project(tmp_path, {"1_a.sql": text})
    (folder / "natlangchain-migrate.toml").write_text(f'layout = "{layout}"\n')
    result = lint("--migrations-dir", str(folder), "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr[-2000:]
    found = {(f["file"], f["line"], f["rule"]) for f in findings(result)}
    assert ("migrations/1_a.sql", 8, "prefer-bigint-over-int") in found, found
