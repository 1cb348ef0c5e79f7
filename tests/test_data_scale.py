"""Data at scale: big files streamed in one transaction, and psql-style COPY data sections.

The pieces a streamed file is sent in are made small here (monkeypatched) so that a
file of a few hundred kB exercises every boundary; test_data_memory.py applies a real
100 MB file under a memory limit.
"""

from __future__ import annotations

import codecs
import itertools
import random
from pathlib import Path

import asyncpg
import pytest

from harness.servers.pgcluster import PgCluster
from natlangchain_migrate import discovery, filesum, sqlscan, streamed
from natlangchain_migrate.api import migrate
from natlangchain_migrate.discovery import checksum, load_migrations
from natlangchain_migrate.errors import ConfigurationError, MigrationFailedError
from tests.conftest import fetchval, ledger_rows, write_migrations

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream every file, a few kB per read and per message."""
    monkeypatch.setattr(discovery, "STREAM_BYTES", 0)
    monkeypatch.setattr(filesum, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(streamed, "PIECE_CHARS", 8192)


async def _no_ledger_rows(url: str) -> bool:
    """No row (in transaction lock mode the ledger's creation is rolled back too)."""
    return bool(
        await fetchval(url, "SELECT to_regclass('schema_migrations') IS NULL")
        or not await ledger_rows(url)
    )


def _seed(rows: int, *, bad_at: int | None = None) -> str:
    """A CREATE TABLE and INSERTs with strings that hold ';', quotes and dollar signs."""
    lines = ["-- seed data\nCREATE TABLE seed (id int PRIMARY KEY, note text, body text);\n"]
    for start in range(0, rows, 50):
        values = ",\n".join(
            f"({start + i}, 'it''s; row {start + i}', $b${start + i};$x$ \"q\"$b$)"
            for i in range(50)
        )
        lines.append(f"INSERT INTO seed VALUES\n{values};\n")
        if bad_at is not None and start <= bad_at < start + 50:
            lines.append(f"INSERT INTO seed VALUES ({bad_at}, 'again', 'dup');\n")
    lines.append("/* done; */ SELECT 1;\n")
    return "".join(lines)


def test_streamed_checksum_equals_the_whole_files(tmp_path: Path) -> None:
    """The checksum read in chunks is discovery's checksum of the whole text, whatever the
    line ends, trailing blanks, byte-order mark or where the chunks fall."""
    random.seed(7)
    parts = ["a", " ", "\t", "\r\n", "\n", "  \n", "x;", "é", "\ufeff", "\r"]
    path = tmp_path / "f.sql"
    for chunk in (1, 3, 7, 64):
        filesum.CHUNK_BYTES, saved = chunk, filesum.CHUNK_BYTES
        try:
            for number in range(300):
                text = "".join(random.choice(parts) for _ in range(random.randint(0, 40)))
                bom = "\ufeff" if number % 3 == 0 else ""
                path.write_bytes((bom + text).encode("utf-8"))
                expected = checksum(path.read_bytes().decode("utf-8-sig"))
                assert filesum.survey(path, "f.sql").checksum == expected, repr(text)
        finally:
            filesum.CHUNK_BYTES = saved


def test_scanner_keeps_strings_comments_and_dollar_quotes_whole(tmp_path: Path) -> None:
    sql = (
        "CREATE TABLE t (a int, b text); -- c;\n"
        "INSERT INTO t VALUES (1, 'x;y'), (2, E'it\\'s;'), (3, $$a;b$$), (4, $f$ $$ ; $f$);\n"
        '/* block ; */ INSERT INTO "we;ird" VALUES (1);\n'
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;\n"
        "SELECT 1"
    )
    path = tmp_path / "f.sql"
    path.write_text(sql)
    for chunk in (1, 5, 4096):
        filesum.CHUNK_BYTES, saved = chunk, filesum.CHUNK_BYTES
        try:
            items = list(sqlscan.scan(path, "f.sql"))
        finally:
            filesum.CHUNK_BYTES = saved
        texts = [item.text.strip() for item in items if isinstance(item, sqlscan.Sql)]
        assert len(texts) == 5
        assert "".join(item.text for item in items if isinstance(item, sqlscan.Sql)) == sql
        assert [item.line for item in items if isinstance(item, sqlscan.Sql)] == [1, 1, 2, 3, 4]


def test_a_data_sections_end_is_found_wherever_the_reads_fall(tmp_path: Path) -> None:
    """The ``\\.`` line ends a section with LF or CRLF, at the end of the file without a
    line end too; ``\\.`` elsewhere in a line, or with more after it, is data. The line
    numbers after the section count its rows."""
    many = "1\\.\tx\\.\n\\.x\t\\\\.\n\\\\.\t\\N\n"
    cases = [(rows, end) for rows in (many, "") for end in ("\\.\n", "\\.\r\n", "\\.", "\\.\r")]
    for rows, end in cases:
        tail = "SELECT 2;\n" if end.endswith("\n") else ""
        sql = f"SELECT 1;\nCOPY t (a, b) FROM stdin;\n{rows}{end}{tail}"
        path = tmp_path / "f.sql"
        path.write_bytes(sql.encode())
        for chunk in (1, 2, 3, 5, 8, 4096):
            filesum.CHUNK_BYTES, saved = chunk, filesum.CHUNK_BYTES
            try:
                data, lines = b"", []
                for item in sqlscan.scan(path, "f.sql"):
                    if isinstance(item, sqlscan.CopyIn):
                        data = b"".join(item.rows)
                        lines.append(item.data_line)
                    elif isinstance(item, sqlscan.Sql):
                        lines.append(item.line)
            finally:
                filesum.CHUNK_BYTES = saved
            assert data == rows.encode(), (end, chunk)
            after = 3 + rows.count("\n") + 1
            assert lines == ([1, 3, after] if tail else [1, 3]), (end, chunk)


def _expected_rows(text: bytes) -> list[tuple[bytes, int]]:
    """Each data section's rows and the line after it, read from the whole text: the
    lines after a COPY ... FROM stdin line up to the first line that is ``\\.``."""
    lines = text.split(b"\n")
    found, number = [], 0
    while number < len(lines):
        number += 1
        if lines[number - 1].startswith(b"COPY"):
            end = next(i for i in range(number, len(lines)) if lines[i] in (b"\\.", b"\\.\r"))
            data = b"".join(line + b"\n" for line in lines[number:end])
            found.append((data, end + 2))
            number = end + 1
    return found


def test_copy_rows_checksum_and_lines_wherever_the_reads_fall(tmp_path: Path) -> None:
    """Random data sections (rows with trailing blanks, CRLF, escapes, ``\\.`` inside a
    row or at its start, non-ASCII, long rows): the rows are the file's bytes up to the
    ``\\.`` line, the statement after starts on the right line, and the checksum is the
    whole text's, whatever the size of the reads."""
    random.seed(21)
    parts = ["a", " ", "\t", "\\", ".", "\\.", "\r", "é", "✓", "x" * 300, "\n", "\n\\"]
    path = tmp_path / "f.sql"
    for number in range(120):
        text = "\ufeff" if number % 5 == 0 else ""
        text += "SELECT 0;\n"
        for section in range(random.randint(1, 3)):
            rows = "".join(random.choice(parts) for _ in range(random.randint(0, 60)))
            lines = rows.split("\n")
            if lines[-1]:
                lines.append("")  # the rows end a line
            rows = "\n".join("x" if line.rstrip("\r") == "\\." else line for line in lines)
            end = random.choice(["\\.\n", "\\.\r\n"])
            text += f"COPY t (a) FROM stdin;\n{rows}{end}SELECT {section + 1};  \n"
        if number % 4 == 0:  # the file ends with its \. line, without a line end
            text = text.rsplit("\n", 2)[0].rstrip("\r") + random.choice(["", "\r"])
        raw = text.encode("utf-8")
        path.write_bytes(raw)
        expected = _expected_rows(raw.removeprefix(codecs.BOM_UTF8))
        for chunk in (1, 2, 3, 4, 7, 64, 4096):
            filesum.CHUNK_BYTES, saved = chunk, filesum.CHUNK_BYTES
            try:  # the rows are read as the scan meets them
                items = [
                    item._replace(rows=iter([b"".join(item.rows)]))
                    if isinstance(item, sqlscan.CopyIn)
                    else item
                    for item in sqlscan.scan(path, "f.sql")
                ]
            finally:
                filesum.CHUNK_BYTES = saved
            found, after = [], []
            for item, following in itertools.pairwise(items):
                if isinstance(item, sqlscan.CopyIn):
                    found.append(next(item.rows))
                    if isinstance(following, sqlscan.Sql):
                        after.append(following.line)
            assert found == [rows for rows, _ in expected], (text, chunk)
            assert after == [line for _, line in expected][: len(after)], (text, chunk)
            assert len(after) == len(expected) - (number % 4 == 0), (text, chunk)
            scanned = items[-1]
            assert isinstance(scanned, sqlscan.Scanned)
            assert scanned.checksum == checksum(text.removeprefix("\ufeff")), (text, chunk)


async def test_a_streamed_file_applies_with_its_ledger_row(
    database_url: str, tmp_path: Path, small_pieces: None
) -> None:
    text = _seed(2000)
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": text})
    (migration,) = load_migrations(folder)
    assert migration.source is not None
    assert migration.sql == ""
    await migrate(database_url, migrations_dir=folder)
    assert await fetchval(database_url, "SELECT count(*) FROM seed") == 2000
    assert await fetchval(database_url, "SELECT note FROM seed WHERE id = 7") == "it's; row 7"
    assert await fetchval(database_url, "SELECT body FROM seed WHERE id = 7") == '7;$x$ "q"'
    (row,) = await ledger_rows(database_url)
    assert row["checksum"] == checksum(text)


@pytest.mark.parametrize("lock_mode", ["session", "transaction"])
async def test_a_failure_late_in_a_streamed_file_leaves_nothing_and_names_its_line(
    database_url: str, tmp_path: Path, small_pieces: None, lock_mode: str
) -> None:
    """All or nothing: a duplicate key near the end rolls back every piece before it, and
    the error names the statement's line (found again by a replay; in transaction lock
    mode, in the lock's transaction rolled back to the file's savepoint)."""
    text = _seed(2000, bad_at=1900)
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": text})
    with pytest.raises(MigrationFailedError) as raised:
        await migrate(database_url, migrations_dir=folder, lock_mode=lock_mode)
    line = text[: text.index("'again'")].count("\n") + 1
    assert raised.value.location == f"001_seed.sql:{line}:1"
    assert await fetchval(database_url, "SELECT to_regclass('seed') IS NULL")
    assert await _no_ledger_rows(database_url)


async def test_a_syntax_error_in_a_streamed_file_names_line_and_column(
    database_url: str, tmp_path: Path, small_pieces: None
) -> None:
    text = _seed(1000) + "SELECT 1;\n  SELEC 2;\n"
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": text})
    with pytest.raises(MigrationFailedError) as raised:
        await migrate(database_url, migrations_dir=folder)
    line = text.count("\n")
    assert raised.value.location == f"001_seed.sql:{line}:3"
    assert await fetchval(database_url, "SELECT to_regclass('seed') IS NULL")


async def test_transaction_control_in_a_streamed_file_is_refused(
    database_url: str, tmp_path: Path, small_pieces: None
) -> None:
    text = _seed(200) + "COMMIT;\nSELECT 1;\n"
    folder = write_migrations(tmp_path / "m", {"001_seed.sql": text})
    with pytest.raises(ConfigurationError, match=r"001_seed.sql:\d+: COMMIT"):
        await migrate(database_url, migrations_dir=folder)
    assert await fetchval(database_url, "SELECT to_regclass('seed') IS NULL")


COPY_FILE = '''\
CREATE TABLE items (id int PRIMARY KEY, note text, raw bytea, tags text[]);
COPY public.items (id, note, raw, tags) FROM stdin;
1\tplain\t\\\\x00ff\t{a,b}
2\t\\N\t\\N\t\\N
3\ttab\\there\\nnewline \\\\ backslash é ✓\t\\\\x5c\t{"x y"}
\\.
INSERT INTO items VALUES (4, 'after', NULL, NULL);
COPY items FROM stdin WITH (FORMAT csv, HEADER true);
id,note,raw,tags
5,"csv, quoted ""x""",,
\\.
'''


async def test_copy_data_sections_run_as_psql_runs_them(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"001_items.sql": COPY_FILE})
    (migration,) = load_migrations(folder)
    assert migration.source is not None  # small, but with data: streamed
    assert migration.checksum == checksum(COPY_FILE)
    await migrate(database_url, migrations_dir=folder)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM items ORDER BY id")
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [
        (1, "plain", b"\x00\xff", ["a", "b"]),
        (2, None, None, None),
        (3, "tab\there\nnewline \\ backslash é ✓", b"\\", ["x y"]),
        (4, "after", None, None),
        (5, 'csv, quoted "x"', None, None),
    ]


def _send_buffer_cap() -> int:
    return int(Path("/proc/sys/net/core/wmem_max").read_text())


async def test_copy_widens_a_unix_sockets_send_buffer_only(
    database_url: str, pg_cluster: PgCluster | None
) -> None:
    """A Unix socket gets room for MBs of rows (up to the kernel's cap); TCP keeps the
    kernel's own sizing."""
    import socket

    urls = [database_url] + ([pg_cluster.socket_dsn()] if pg_cluster is not None else [])
    families = set()
    for url in urls:
        conn = await asyncpg.connect(url)
        try:
            sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
            families.add(sock.family)
            before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            streamed._widen_local_send_buffer(conn)
            after = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            if sock.family == socket.AF_UNIX:
                assert after >= min(streamed.COPY_SOCKET_BUFFER, _send_buffer_cap())
            else:
                assert after == before
        finally:
            await conn.close()
    assert pg_cluster is None or socket.AF_UNIX in families


async def test_a_bad_copy_row_is_named_and_nothing_stays(database_url: str, tmp_path: Path) -> None:
    bad = COPY_FILE.replace("2\t\\N\t\\N\t\\N", "two\t\\N\t\\N\t\\N")
    folder = write_migrations(tmp_path / "m", {"001_items.sql": bad})
    with pytest.raises(MigrationFailedError) as raised:
        await migrate(database_url, migrations_dir=folder)
    assert raised.value.location == "001_items.sql:4"
    assert "invalid input syntax for type integer" in str(raised.value)
    assert await fetchval(database_url, "SELECT to_regclass('items') IS NULL")
    assert await _no_ledger_rows(database_url)


async def test_a_copy_without_its_end_is_not_streamed(tmp_path: Path) -> None:
    """No closing \\. line: left to preflight, which refuses it before anything runs."""
    folder = write_migrations(
        tmp_path / "m", {"001_items.sql": "CREATE TABLE t (a int);\nCOPY t FROM stdin;\n1\n"}
    )
    (migration,) = load_migrations(folder)
    assert migration.source is None


async def test_a_psql_meta_command_in_a_streamed_file_is_named(
    database_url: str, tmp_path: Path
) -> None:
    text = COPY_FILE + "\\set x 1\nSELECT 1;\n"
    folder = write_migrations(tmp_path / "m", {"001_items.sql": text})
    with pytest.raises(ConfigurationError, match=r"001_items.sql:12: \\set is a psql"):
        await migrate(database_url, migrations_dir=folder)
    assert await fetchval(database_url, "SELECT to_regclass('items') IS NULL")


AWKWARD_DATA = r"""
CREATE TABLE attachments (id int PRIMARY KEY, payload bytea, note text);
INSERT INTO entries (entry_id, content, author, intent, metadata) VALUES
    ('e1', E'tab\there\nnew line\r\nback\\slash \\N not null', 'Zoë ✓ 日本', NULL,
     '{"k": "v\"q\" \\ \n", "n": null}'),
    ('e2', E'\\.', E'end\nof\\.data', 'x', '{}'),
    ('e3', '', 'empty', '', 'null');
INSERT INTO blocks (block_index, "timestamp", previous_hash, hash) VALUES
    (0, '2026-01-01 00:00:00.123456+00', '0', 'h0'),
    (1, 'infinity', 'h0', E'h1\t');
INSERT INTO block_entries (block_id, entry_id, position)
    SELECT b.id, e.id, row_number() OVER () FROM blocks b, entries e WHERE b.block_index = 1;
INSERT INTO entry_embeddings (entry_id, embedding)
    SELECT id, array_fill(0.125::real, ARRAY[384])::vector FROM entries WHERE entry_id = 'e1';
INSERT INTO entry_embeddings (entry_id, embedding, model_name)
    SELECT id, NULL, E'm\\2' FROM entries WHERE entry_id = 'e2';
INSERT INTO metrics_snapshots (metric_name, metric_type, metric_value, labels) VALUES
    ('nan', 'g', 'NaN', '{}'), ('inf', 'g', '-Infinity', '{"a": [1, 2]}'),
    ('tiny', 'g', 1e-300, '{}'), ('pi', 'g', 3.141592653589793, '{}');
INSERT INTO cache_entries (cache_key, cache_value, expires_at) VALUES
    (E'key\twith\ttabs', '"str"', NULL), ('k2', '[1, "two", {"3": null}]', '-infinity');
INSERT INTO attachments VALUES
    (1, '\x00ff5c0a09', 'nul and friends'), (2, NULL, NULL), (3, '', E'\\x'),
    (4, decode(repeat('5c', 100000), 'hex'), 'a long one');
"""

_TABLES = (
    "entries",
    "blocks",
    "block_entries",
    "entry_embeddings",
    "metrics_snapshots",
    "cache_entries",
    "attachments",
)


async def _table_texts(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            table: [row[0] for row in await conn.fetch(f"SELECT t::text FROM {table} t ORDER BY 1")]
            for table in _TABLES
        }
    finally:
        await conn.close()


def _pg_dump_data(url: str) -> bytes:
    """The real pg_dump beside the embedded server's postgres, plain format, data only."""
    import subprocess

    from harness.servers.pgcluster import embedded_bindir

    tables = [f"--table=public.{table}" for table in _TABLES]
    return subprocess.run(
        [str(embedded_bindir() / "pg_dump"), "--data-only", *tables, "-d", url],
        capture_output=True,
        check=True,
    ).stdout


async def test_pg_dump_data_of_the_natlangchain_schema_round_trips(
    migrated_database_url: str, database_url: str, tmp_path: Path
) -> None:
    """pg_dump --data-only's plain output (COPY sections, setval, \\restrict) applies as a
    migration, and every value comes back exactly."""
    conn = await asyncpg.connect(migrated_database_url)
    try:
        await conn.execute(AWKWARD_DATA)
    finally:
        await conn.close()
    dump = _pg_dump_data(migrated_database_url)
    assert b"COPY public.attachments (id, payload, note) FROM stdin;" in dump
    assert b"\\restrict " in dump  # pg_dump 18's guard lines, skipped as psql does
    folder = tmp_path / "m"
    folder.mkdir()
    for path in discovery.shipped_migrations_dir().iterdir():
        if path.name[:3] in ("001", "002", "003") and not path.name.endswith(".down.sql"):
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / "004_attachments.sql").write_text(AWKWARD_DATA.split(";", 1)[0] + ";\n")
    (folder / "005_data.sql").write_bytes(dump)
    await migrate(database_url, migrations_dir=folder)
    assert await _table_texts(database_url) == await _table_texts(migrated_database_url)
    rows = await ledger_rows(database_url)
    assert rows[-1]["checksum"] == checksum(dump.decode("utf-8"))


@pytest.mark.parametrize(
    "header",
    [
        "COPY t (a, b)\n  FROM stdin;",  # a hand-written COPY over lines
        "copy public.t\n(a, b)\nfrom STDIN;",
        "/* rows */ COPY t (a, b) FROM stdin;",  # a comment before it on its line
    ],
)
async def test_a_copy_over_lines_or_after_a_comment_runs_as_psql_runs_it(
    database_url: str, tmp_path: Path, header: str
) -> None:
    """psql reads these as it reads pg_dump's one-line COPY; before, the file was not
    taken for one with data and was refused as a COPY with no rows ("add them")."""
    text = f"CREATE TABLE t (a int, b text);\n{header}\n1\tone\n2\t\\N\n\\.\nSELECT 1;\n"
    folder = write_migrations(tmp_path / "m", {"001_t.sql": text})
    (migration,) = load_migrations(folder)
    assert migration.source is not None
    assert migration.checksum == checksum(text)
    await migrate(database_url, migrations_dir=folder)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT a, b FROM t ORDER BY a")
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [(1, "one"), (2, None)]


async def test_a_copy_left_open_after_a_closed_one_is_named_at_its_own_line(
    database_url: str, tmp_path: Path
) -> None:
    """Before, the refusal named the first COPY (line 2), whose rows end well, and said to
    add rows; the one without its \\. is on line 5."""
    text = "CREATE TABLE t (a int);\nCOPY t FROM stdin;\n1\n\\.\nCOPY t FROM stdin;\n2\n"
    folder = write_migrations(tmp_path / "m", {"001_t.sql": text})
    with pytest.raises(ConfigurationError) as raised:
        await migrate(database_url, migrations_dir=folder)
    assert str(raised.value).startswith("001_t.sql:5: ")
    assert "\\." in str(raised.value)
    assert await fetchval(database_url, "SELECT to_regclass('t') IS NULL")
