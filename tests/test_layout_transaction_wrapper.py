"""BEGIN; ... COMMIT; around a whole file, as each layout's own tool means it.

golang-migrate and prisma open no transaction of their own (golang-migrate's
database/postgres Run() sends the file in one Exec and its README says to wrap files
in BEGIN/COMMIT; prisma's docs: on PostgreSQL, opt in by adding BEGIN; and COMMIT;), so
their users wrap files themselves: such a file runs its body in the runner's transaction
with its ledger row, its checksum the file's. Every other layout's tool (and ours) opens
one per file, so BEGIN there stays refused, and so does anything but a whole-file wrapper.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import asyncpg
import pytest

from harness.servers.sql import execute
from natlangchain_migrate.discovery import checksum, load_migrations
from natlangchain_migrate.errors import ExitCode
from tests.conftest import (
    fetchval,
    ledger_rows,
    run_cli,
    start_cli,
    table_names,
    write_migrations,
)
from tests.test_lint import findings, lint, project

WRAPPED_UP = (
    "BEGIN;\n\nCREATE TABLE users (id int PRIMARY KEY);\n"
    "CREATE INDEX users_id ON users (id);\n\nCOMMIT;\n"
)
WRAPPED_DOWN = "BEGIN;\nDROP TABLE users;\nCOMMIT;\n"
# The other spellings PostgreSQL gives the same plain BEGIN and COMMIT.
SPELLINGS = [
    ("START TRANSACTION;", "END;"),
    ("BEGIN TRANSACTION;", "COMMIT WORK;"),
    ("-- golang-migrate: one transaction\nBEGIN WORK ;", "COMMIT TRANSACTION;\n-- done"),
    ("begin;", "end transaction;"),
]


def _golang(tmp_path: Path, files: dict[str, str]) -> Path:
    return write_migrations(tmp_path / "m", files)


def _flags(folder: Path, *more: str) -> tuple[str, ...]:
    return ("--migrations-dir", str(folder), *more)


GOLANG = {
    "1_users.up.sql": WRAPPED_UP,
    "1_users.down.sql": WRAPPED_DOWN,
    "2_orders.up.sql": "BEGIN;\nCREATE TABLE orders (id int);\nCOMMIT;",
    "2_orders.down.sql": "BEGIN;\nDROP TABLE orders;\nCOMMIT;",
}
PRISMA = {
    "20240101120000_users/migration.sql": WRAPPED_UP,
    "20240101120000_users/down.sql": WRAPPED_DOWN,
    "migration_lock.toml": 'provider = "postgresql"\n',
}


@pytest.mark.parametrize("files", [GOLANG, PRISMA], ids=["golang-migrate", "prisma"])
@pytest.mark.parametrize("lock_mode", ["session", "transaction"])
def test_wrapped_files_apply_roll_back_and_apply_again(
    database_url: str, tmp_path: Path, files: dict[str, str], lock_mode: str
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    flags = _flags(folder, "--lock-mode", lock_mode)
    dry_rollback = ("--rollback", "--to", "0", "--dry-run")
    for step in (("--dry-run",), (), dry_rollback, ("--rollback", "--to", "0"), ()):
        result = run_cli(*step, *flags, database_url=database_url)
        assert result.returncode == 0, result.stderr
        assert "WARNING" not in result.stderr  # no "there is already a transaction"
        if step == dry_rollback:  # the down files as they would be sent
            assert "DROP TABLE users;" in result.stdout
            assert "BEGIN" not in result.stdout
            assert "COMMIT" not in result.stdout
    assert "users" in asyncio.run(table_names(database_url))
    rows = asyncio.run(ledger_rows(database_url))
    ups = {name: text for name, text in files.items() if "down" not in name and "toml" not in name}
    assert [row["checksum"] for row in rows] == [checksum(text) for text in ups.values()]


@pytest.mark.parametrize(("begin", "commit"), SPELLINGS, ids=lambda pair: str(pair))
def test_every_spelling_of_the_wrapper_is_accepted(
    database_url: str, tmp_path: Path, begin: str, commit: str
) -> None:
    folder = _golang(
        tmp_path,
        {
            "1_a.up.sql": f"{begin}\nCREATE TABLE a (id int);\n{commit}\n",
            "1_a.down.sql": f"{begin} DROP TABLE a; {commit}",
        },
    )
    (loaded,) = load_migrations(folder)
    assert "BEGIN" not in loaded.sql.upper().replace("-- GOLANG", "")
    assert loaded.sql.count("\n") == f"{begin}\nCREATE TABLE a (id int);\n{commit}\n".count("\n")
    for step in ((), ("--rollback",)):
        result = run_cli(*step, *_flags(folder), database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert "a" not in asyncio.run(table_names(database_url))


def test_a_failing_statement_inside_the_wrapper_undoes_the_whole_file_and_its_row(
    database_url: str, tmp_path: Path
) -> None:
    folder = _golang(
        tmp_path,
        {
            "1_users.up.sql": WRAPPED_UP,
            "2_bad.up.sql": (
                "BEGIN;\nCREATE TABLE kept_out (id int);\nINSERT INTO kept_out VALUES (1);\n"
                "SELECT 1 / 0;\nCOMMIT;\n"
            ),
        },
    )
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    assert "2_bad.up.sql:4" in result.stderr  # the line in the file as written
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1]
    assert "kept_out" not in asyncio.run(table_names(database_url))


def test_a_failing_wrapped_down_file_keeps_the_schema_and_the_row(
    database_url: str, tmp_path: Path
) -> None:
    files = {
        "1_users.up.sql": WRAPPED_UP,
        "1_users.down.sql": "BEGIN;\nDROP TABLE users;\nSELECT 1 / 0;\nCOMMIT;\n",
    }
    folder = _golang(tmp_path, files)
    assert run_cli(*_flags(folder), database_url=database_url).returncode == 0
    result = run_cli("--rollback", *_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    assert "users" in asyncio.run(table_names(database_url))
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1]


@pytest.mark.parametrize(
    ("text", "line", "keyword"),
    [
        ("CREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\n", 2, "BEGIN"),
        ("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\nBEGIN;\nSELECT 1;\nCOMMIT;\n", 3, "COMMIT"),
        ("BEGIN;\nCREATE TABLE a (id int);\nROLLBACK;\n", 3, "ROLLBACK"),
        ("CREATE TABLE a (id int);\nCOMMIT;\n", 2, "COMMIT"),
        ("BEGIN;\nCREATE TABLE a (id int);\n", 1, "BEGIN"),
        ("BEGIN;\nSAVEPOINT s;\nCREATE TABLE a (id int);\nCOMMIT;\n", 2, "SAVEPOINT"),
        ("BEGIN;\nSELECT 1;\nCOMMIT AND CHAIN;\n", 3, "COMMIT"),
        ("SELECT 1; BEGIN; SELECT 2; COMMIT;", 1, "BEGIN"),
    ],
    ids=[
        "mid-file",
        "two-transactions",
        "rollback",
        "commit-alone",
        "no-commit",
        "savepoint",
        "chain",
        "one-line",
    ],
)
def test_anything_but_a_whole_file_wrapper_is_refused_saying_what_is_accepted(
    database_url: str, tmp_path: Path, text: str, line: int, keyword: str
) -> None:
    folder = _golang(tmp_path, {"1_ok.up.sql": "CREATE TABLE ok (id int);", "2_x.up.sql": text})
    for dry in ((), ("--dry-run",)):
        result = run_cli(*dry, *_flags(folder), database_url=database_url)
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert (
            f"2_x.up.sql:{line}: {keyword} inside a migration; a golang-migrate file may be "
            "wrapped whole in BEGIN; ... COMMIT;" in result.stderr
        )
    assert asyncio.run(table_names(database_url)) == set()  # refused before anything ran


@pytest.mark.parametrize(
    ("begin", "options"),
    [
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;", "ISOLATION LEVEL SERIALIZABLE"),
        ("START TRANSACTION\n  READ WRITE ;", "READ WRITE"),
        (
            "begin transaction isolation level repeatable read, deferrable;",
            "isolation level repeatable read, deferrable",
        ),
    ],
)
@pytest.mark.parametrize("name", ["1_x.up.sql", "20240101120000_x/migration.sql"])
def test_a_wrapper_with_options_is_refused_saying_where_the_options_go(
    database_url: str, tmp_path: Path, begin: str, options: str, name: str
) -> None:
    """golang-migrate and prisma would run BEGIN ISOLATION LEVEL ... as it is; here the
    runner's transaction takes the BEGIN's place, so the options go in a SET TRANSACTION
    (which then runs: see the next test), not "remove this BEGIN" (that left a lone COMMIT)."""
    folder = write_migrations(tmp_path / "m", {name: f"{begin}\nSELECT 1;\nCOMMIT;\n"})
    for dry in ((), ("--dry-run",)):
        result = run_cli(*dry, *_flags(folder), database_url=database_url)
        assert result.returncode == ExitCode.USAGE, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "run_failed" in line]
        assert (
            f"{name}:1: {begin.split()[0].upper()} inside a migration; only a plain BEGIN;" in line
        )
        assert f"write BEGIN; and put SET TRANSACTION {options}; after it" in line


@pytest.mark.parametrize("files", [GOLANG, PRISMA], ids=["golang-migrate", "prisma"])
def test_set_transaction_as_the_wrapped_bodys_first_statement_sets_the_isolation_level(
    database_url: str, tmp_path: Path, files: dict[str, str]
) -> None:
    up = next(name for name in files if name.endswith((".up.sql", "migration.sql")))
    text = (
        "BEGIN;\nSET TRANSACTION ISOLATION LEVEL SERIALIZABLE;\n"
        "CREATE TABLE iso AS SELECT current_setting('transaction_isolation') AS level;\nCOMMIT;\n"
    )
    folder = write_migrations(tmp_path / "m", {up: text})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert asyncio.run(fetchval(database_url, "SELECT level FROM iso")) == "serializable"


def test_a_down_file_with_a_mid_file_begin_is_refused_before_anything_is_undone(
    database_url: str, tmp_path: Path
) -> None:
    files = {
        "1_users.up.sql": WRAPPED_UP,
        "1_users.down.sql": "DROP TABLE users;\nBEGIN;\nSELECT 1;\nCOMMIT;\n",
    }
    folder = _golang(tmp_path, files)
    assert run_cli(*_flags(folder), database_url=database_url).returncode == 0
    for dry in ((), ("--dry-run",)):
        result = run_cli("--rollback", *dry, *_flags(folder), database_url=database_url)
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert (
            "1_users.down.sql:2: BEGIN inside a migration; a golang-migrate file" in result.stderr
        )
    assert "users" in asyncio.run(table_names(database_url))


@pytest.mark.parametrize(
    ("files", "name", "says"),
    [
        (
            {"001_a.sql": WRAPPED_UP},
            "001_a.sql",
            "only a golang-migrate or prisma file, whose tool opens no transaction, may be "
            "wrapped whole",
        ),
        (
            {"001_a.sql": "CREATE TABLE a (id int);", "001_a.down.sql": WRAPPED_DOWN},
            "001_a.down.sql",
            "only a golang-migrate or prisma file",
        ),
        (
            {"00001_a.sql": f"-- +goose Up\n{WRAPPED_UP}-- +goose Down\nDROP TABLE users;\n"},
            "00001_a.sql",
            "goose too runs each file in a transaction it opens itself",
        ),
        (
            {"1_a.sql": f"-- migrate:up\n{WRAPPED_UP}-- migrate:down\nDROP TABLE users;\n"},
            "1_a.sql",
            "dbmate too runs each file in a transaction it opens itself",
        ),
        (
            {"V1__a.sql": WRAPPED_UP},
            "V1__a.sql",
            "flyway too runs each file in a transaction it opens itself",
        ),
        (
            {"1700000000000_a.sql": f"-- Up Migration\n{WRAPPED_UP}"},
            "1700000000000_a.sql",
            "node-pg-migrate too runs each file in a transaction it opens itself",
        ),
    ],
    ids=["ours", "ours-down", "goose", "dbmate", "flyway", "node-pg-migrate"],
)
def test_layouts_whose_tool_opens_a_transaction_keep_refusing_the_wrapper(
    database_url: str, tmp_path: Path, files: dict[str, str], name: str, says: str
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    if name.endswith(".down.sql"):
        assert run_cli(*_flags(folder), database_url=database_url).returncode == 0
        result = run_cli("--rollback", *_flags(folder), database_url=database_url)
    else:
        result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"{name}:" in result.stderr
    assert "BEGIN inside a migration" in result.stderr
    assert says in result.stderr


def test_sqlx_keeps_refusing_the_wrapper(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"1_a.up.sql": WRAPPED_UP})
    (folder / "natlangchain-migrate.toml").write_text('layout = "sqlx"\n')
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "sqlx too runs each file in a transaction it opens itself" in result.stderr


def test_adopt_from_golang_migrate_records_the_wrapped_files_own_checksums(
    database_url: str, tmp_path: Path
) -> None:
    """The checksum stays the file's bytes' (BEGIN; and COMMIT; included), so adopting a
    golang-migrate history records the same files as before this change, and a later run
    sees no drift."""
    folder = _golang(tmp_path, GOLANG)
    asyncio.run(
        execute(
            database_url,
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, "
            "dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (2, false); "
            "CREATE TABLE users (id int PRIMARY KEY); CREATE TABLE orders (id int);",
        )
    )
    result = run_cli(
        "adopt", "--from", "golang-migrate", *_flags(folder), database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    recorded = asyncio.run(
        fetchval(
            database_url,
            "SELECT array_agg(checksum ORDER BY version)::text[] FROM natlangchain_migrations",
        )
    )
    assert recorded == [checksum(GOLANG["1_users.up.sql"]), checksum(GOLANG["2_orders.up.sql"])]
    for step in (("--check",), ("--rollback", "--to", "0")):
        after = run_cli(*step, *_flags(folder), database_url=database_url)
        assert after.returncode == 0, after.stderr
    assert asyncio.run(table_names(database_url)) >= {"schema_migrations"}
    assert not {"users", "orders"} & asyncio.run(table_names(database_url))


# golang-migrate's README (database/postgres, Multi-statement mode): CREATE INDEX
# CONCURRENTLY goes in a file of its own, which it sends alone, outside any transaction.
def test_a_lone_create_index_concurrently_runs_outside_a_transaction_as_golang_migrate_runs_it(
    database_url: str, tmp_path: Path
) -> None:
    folder = _golang(
        tmp_path,
        {
            "1_users.up.sql": WRAPPED_UP,
            "1_users.down.sql": WRAPPED_DOWN,
            "2_users_ix.up.sql": "CREATE INDEX CONCURRENTLY users_ix ON users (id);\n",
            "2_users_ix.down.sql": "DROP INDEX CONCURRENTLY users_ix;\n",
        },
    )
    assert [m.directives.no_transaction for m in load_migrations(folder)] == [False, True]
    for step in ((), ("--rollback",), ()):
        result = run_cli(*step, *_flags(folder), database_url=database_url)
        assert result.returncode == 0, result.stderr
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_ix'::regclass"
    assert asyncio.run(fetchval(database_url, valid)) is True
    # Through PgBouncer's transaction pooling it cannot run: refused by name, as ours is.
    run_cli("--rollback", *_flags(folder), database_url=database_url)
    pooled = run_cli(*_flags(folder, "--lock-mode", "transaction"), database_url=database_url)
    assert pooled.returncode == ExitCode.USAGE
    assert "2_users_ix.up.sql runs without a transaction" in pooled.stderr


def test_create_index_concurrently_among_other_statements_fails_as_it_does_in_golang_migrate(
    database_url: str, tmp_path: Path
) -> None:
    """golang-migrate sends such a file in one Exec, which PostgreSQL runs as one implicit
    transaction: 25001. Here too the file fails whole, nothing of it kept, and the message
    says to give the statement a file of its own."""
    folder = _golang(
        tmp_path,
        {
            "1_users.up.sql": "CREATE TABLE users (id int);\n"
            "CREATE INDEX CONCURRENTLY users_ix ON users (id);\n",
        },
    )
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    assert "cannot run inside a transaction block" in result.stderr
    assert "give it a file of its own (a golang-migrate file of that one statement" in (
        result.stderr
    )
    assert asyncio.run(table_names(database_url)) <= {"schema_migrations"}
    assert asyncio.run(ledger_rows(database_url)) == []


# squawk's rules on transactions: BEGIN/COMMIT inside the tool's, and a concurrent index in one.
TRANSACTION_RULES = {"transaction-nesting", "ban-concurrent-index-creation-in-transaction"}


def test_lint_and_verify_see_the_file_as_the_run_does(database_url: str, tmp_path: Path) -> None:
    """lint gives squawk the body in the runner's transaction (no transaction-nesting for
    the wrapper; a lone CREATE INDEX CONCURRENTLY checked outside one), and flags what the
    run refuses; verify applies, rolls back and applies again through the run itself."""
    lone = "CREATE INDEX CONCURRENTLY users_ix ON users (id);\n"
    files = {
        **GOLANG,
        "3_users_ix.up.sql": lone,
        "3_users_ix.down.sql": "DROP INDEX CONCURRENTLY users_ix;\n",
    }
    folder = project(tmp_path, files)
    flags = ("--migrations-dir", str(folder), "--json")
    clean = {(f["file"], f["rule"]) for f in findings(lint(*flags, cwd=tmp_path))}
    assert not {rule for _, rule in clean} & TRANSACTION_RULES, clean
    checked = run_cli("verify", "--migrations-dir", str(folder), database_url=database_url)
    assert checked.returncode == ExitCode.OK, checked.stderr
    write_migrations(folder, {"4_x.up.sql": "SELECT 1;\nBEGIN;\nSELECT 2;\nCOMMIT;\n"})
    flagged = lint(*flags, cwd=tmp_path)
    rules = [
        (f["file"].rsplit("/", 1)[-1], f["line"], f["rule"])
        for f in findings(flagged)
        if f["rule"] in TRANSACTION_RULES
    ]
    assert rules == [
        ("4_x.up.sql", 2, "transaction-nesting"),
        ("4_x.up.sql", 4, "transaction-nesting"),
    ]


async def _waiting_on(url: str, text: str) -> int | None:
    """The pid of a backend waiting for a lock while running a query containing ``text``."""
    return await fetchval(  # type: ignore[no-any-return]
        url,
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        f"AND query LIKE '%{text}%' LIMIT 1",
    )


@pytest.mark.system  # README: "Running the tests" (kill -9)
def test_a_runner_killed_inside_a_wrapped_file_leaves_it_to_the_next_run_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    """kill -9 while the body waits for a lock: whatever the killed session's transaction
    then does (it is one message with the ledger row, so it commits whole or not at all),
    the next run leaves the body applied exactly once with its row."""
    folder = _golang(
        tmp_path,
        {
            "1_hits.up.sql": (
                "BEGIN;\nCREATE TABLE hits (n int);\nCREATE TABLE gate (n int);\nCOMMIT;"
            ),
            "2_work.up.sql": (
                "BEGIN;\nINSERT INTO hits VALUES (1);\nLOCK TABLE gate IN ACCESS EXCLUSIVE MODE;\n"
                "CREATE TABLE done (id int);\nCOMMIT;\n"
            ),
        },
    )
    flags = _flags(folder, "--pg-lock-timeout", "120s")
    assert run_cli(*flags, "--version", "1", database_url=database_url).returncode == 0

    async def scenario() -> None:
        holder = await asyncpg.connect(database_url)
        try:
            await holder.execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
            runner = start_cli(*flags, database_url=database_url, output=subprocess.DEVNULL)
            for _ in range(600):
                if await _waiting_on(database_url, "LOCK TABLE gate") is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                runner.kill()
                raise AssertionError("the runner never reached the wrapped file's body")
            runner.send_signal(signal.SIGKILL)
            runner.wait()
            await holder.execute("ROLLBACK")
        finally:
            await holder.close()

    asyncio.run(scenario())
    rerun = run_cli(*flags, database_url=database_url)
    assert rerun.returncode == 0, rerun.stderr
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM hits")) == 1
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1, 2]
    assert "done" in asyncio.run(table_names(database_url))


@pytest.mark.parametrize(
    ("text", "unwrapped"),
    [
        ("BEGIN;\nSELECT 1;\nCOMMIT;\n", True),
        ("  BEGIN ;  SELECT 1;  COMMIT\n;", True),
        ("-- a\n/* b */ BEGIN;\nSELECT 'COMMIT;';\nCOMMIT; -- c\n", True),
        (
            "BEGIN;\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n"
            "  COMMIT;\n  RETURN 1;\nEND;\n$$;\nCOMMIT;\n",
            True,
        ),
        ("SELECT 1;\n", False),
        ("BEGIN;\n", False),
        ("COMMIT;\nBEGIN;\n", False),
        ("BEGIN;\nBEGIN;\nCOMMIT;\n", False),
        ("BEGIN;\nSELECT 1;\nABORT;\n", False),
    ],
)
def test_the_wrapper_is_blanked_and_every_line_and_column_stays(text: str, unwrapped: bool) -> None:
    """Only statements as PostgreSQL's parser reads them count (not a COMMIT in a string or
    a plpgsql body), and the body keeps every character where the file has it."""
    from natlangchain_migrate.statements import split_statements, unwrap_transaction

    body = unwrap_transaction(text)
    assert (body is not None) is unwrapped
    if body is None:
        return
    assert len(body) == len(text)
    assert [i for i, c in enumerate(body) if c == "\n"] == [
        i for i, c in enumerate(text) if c == "\n"
    ]
    kept = [(s.offset, s.text) for s in split_statements("", body)]
    assert kept == [(s.offset, s.text) for s in split_statements("", text)[1:-1]]


@pytest.mark.parametrize(
    ("text", "alone"),
    [
        ("CREATE INDEX CONCURRENTLY ix ON t (id);", True),
        ("DROP INDEX CONCURRENTLY ix;", True),
        ("VACUUM t;", True),
        ("REINDEX INDEX CONCURRENTLY ix;", True),
        ("-- a comment first\nCREATE UNIQUE INDEX CONCURRENTLY ix ON t (id);\n", True),
        ("CREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY ix ON t (id);", False),
        ("BEGIN;\nCREATE INDEX CONCURRENTLY ix ON t (id);\nCOMMIT;", False),
        ("CREATE INDEX ix ON t (id);", False),
        ("ANALYZE t;", False),
    ],
)
@pytest.mark.parametrize("layout", ["golang-migrate", "prisma", "sqlx"])
def test_a_file_of_one_statement_that_refuses_a_transaction_runs_outside_one(
    tmp_path: Path, text: str, alone: bool, layout: str
) -> None:
    """As golang-migrate and prisma send it (one statement alone: no transaction); sqlx
    opens one per file, so there it stays transactional (and fails as it does in sqlx)."""
    if layout == "prisma":
        files = {"20240101120000_a/migration.sql": text}
    else:
        files = {"1_a.up.sql": text, "natlangchain-migrate.toml": f'layout = "{layout}"\n'}
    (loaded,) = load_migrations(write_migrations(tmp_path / "m", files))
    assert loaded.directives.no_transaction is (alone and layout != "sqlx")


# A keyword after a comment (on its line or the lines before), END (COMMIT's other name) and
# PREPARE TRANSACTION: the cheap look before the parse missed them, and the file ran with
# its COMMIT ending the runner's transaction (its table kept, "rolled back" said).
HIDDEN = [
    ("CREATE TABLE t1 (id int); /* done */ COMMIT;\nSELECT 1/0;\n", 1, "COMMIT"),
    ("CREATE TABLE t1 (id int);\n-- done\n  /* now */ ROLLBACK;\n", 3, "ROLLBACK"),
    ("CREATE TABLE t1 (id int);\nEND;\nSELECT 1/0;\n", 2, "END"),
    ("CREATE TABLE t1 (id int);\nend transaction;\n", 2, "END"),
    ("CREATE TABLE t1 (id int);\nPREPARE TRANSACTION 'x';\n", 2, "PREPARE"),
    ("/* a */ BEGIN; CREATE TABLE t1 (id int);\n", 1, "BEGIN"),
]


@pytest.mark.parametrize(("text", "line", "keyword"), HIDDEN)
def test_transaction_control_after_a_comment_or_spelt_end_is_found(
    text: str, line: int, keyword: str
) -> None:
    from natlangchain_migrate.statements import find_transaction_control

    assert find_transaction_control(text) == (line, keyword)


def test_end_of_a_plpgsql_body_is_not_transaction_control() -> None:
    from natlangchain_migrate.statements import _parsed_if_flagged

    body = "BEGIN\n  RETURN 1;\nEND;\n"
    # A tag's first character is a letter, "_" or non-ASCII; digits may follow.
    for quote in ("$$", "$fn$", "$função$", "$_t1$", "$ʃ9$", "$😀x$", "$Z_0é$"):
        text = f"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS {quote}\n{body}{quote};\n"
        assert _parsed_if_flagged(text) == []  # not even parsed: start-up stays light


@pytest.mark.parametrize(("text", "line", "keyword"), HIDDEN)
def test_a_hidden_commit_is_refused_before_anything_runs(
    database_url: str, tmp_path: Path, text: str, line: int, keyword: str
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_a.sql": text})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"001_a.sql:{line}: {keyword} inside a migration" in result.stderr
    assert asyncio.run(table_names(database_url)) == set()


def test_a_wrapper_after_a_comment_on_its_line_runs_in_the_runners_transaction(
    database_url: str, tmp_path: Path
) -> None:
    text = "/* one transaction */ BEGIN;\nCREATE TABLE t1 (id int); /* end */ COMMIT;\n"
    folder = _golang(tmp_path, {"1_a.up.sql": text})
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr  # no "there is already a transaction in progress"
    assert "t1" in asyncio.run(table_names(database_url))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (GOLANG, ["1_users.up.sql", "2_orders.up.sql"]),
        (PRISMA, ["20240101120000_users/migration.sql"]),
    ],
    ids=["golang-migrate", "prisma"],
)
def test_dry_run_json_names_each_wrapped_file_as_it_is_in_the_folder(
    database_url: str, tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    """name is not the file's name there (1_users, not 1_users.up.sql); --dry-run --json
    gave only version and name, so a script could not find the file it would run."""
    import json

    folder = write_migrations(tmp_path / "m", files)
    result = run_cli("--dry-run", "--json", *_flags(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert [item["file"] for item in json.loads(result.stdout)] == expected


@pytest.mark.parametrize(
    ("name", "own"),
    [("R__views.sql", "a repeatable (R__) file"), ("1_schema.baseline.sql", "a baseline file")],
)
def test_this_runners_own_files_in_a_golang_migrate_folder_say_why_they_take_no_wrapper(
    database_url: str, tmp_path: Path, name: str, own: str
) -> None:
    """They said "only a golang-migrate or prisma file ... may be wrapped", in a
    golang-migrate folder: true of the tool's files, not of these."""
    files = {"1_users.up.sql": WRAPPED_UP, name: WRAPPED_UP}
    folder = _golang(tmp_path, files)
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert (
        f"{name}:1: BEGIN inside a migration; remove it and its COMMIT: {own} is this "
        "runner's own, not another tool's, so in every layout"
    ) in result.stderr
    assert "only a golang-migrate or prisma file" not in result.stderr
    assert asyncio.run(table_names(database_url)) == set()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "1_iso.up.sql",
            "BEGIN;\nSET TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nCOMMIT;\n",
        ),
        ("001_iso.sql", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\n"),
    ],
    ids=["golang-migrate", "ours"],
)
def test_set_transaction_under_transaction_lock_mode_says_to_use_session_mode(
    database_url: str, tmp_path: Path, name: str, text: str
) -> None:
    """The 25001 advice said to give the statement a file of its own or mark the file
    no-transaction: neither works for a SET TRANSACTION inside the lock's transaction."""
    folder = write_migrations(tmp_path / "m", {name: text})
    result = run_cli(*_flags(folder, "--lock-mode", "transaction"), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    assert "run this file with --lock-mode session, or drop its SET TRANSACTION" in result.stderr
    assert "give it a file of its own" not in result.stderr
    assert run_cli(*_flags(folder), database_url=database_url).returncode == 0  # session mode


TABLE_AND_INDEX = (
    "CREATE TABLE users (id int);\nCREATE INDEX CONCURRENTLY users_ix ON users (id);\n"
)
INDEX_ALONE = "CREATE INDEX CONCURRENTLY users_ix ON users (id);\n"
# Each layout's file of both statements; the advice's words; the folder once it is followed.
CONCURRENTLY_IN_A_FILE = {
    "natlangchain": (
        {"001_users.sql": TABLE_AND_INDEX},
        "move it into a file marked '-- natlangchain: no-transaction'",
        {"001_users.sql": "-- natlangchain: no-transaction\n" + TABLE_AND_INDEX},
    ),
    "golang-migrate": (
        {"1_users.up.sql": f"BEGIN;\n{TABLE_AND_INDEX}COMMIT;\n"},
        "give it a file of its own (a golang-migrate file of that one statement, with no "
        "BEGIN;/COMMIT; around it",
        {
            "1_users.up.sql": "BEGIN;\nCREATE TABLE users (id int);\nCOMMIT;\n",
            "2_users_ix.up.sql": INDEX_ALONE,
        },
    ),
    "prisma": (
        {"20240101000000_users/migration.sql": f"BEGIN;\n{TABLE_AND_INDEX}COMMIT;\n"},
        "give it a file of its own (a prisma file of that one statement, with no "
        "BEGIN;/COMMIT; around it",
        {
            "20240101000000_users/migration.sql": "BEGIN;\nCREATE TABLE users (id int);\nCOMMIT;\n",
            "20240101000001_users_ix/migration.sql": INDEX_ALONE,
        },
    ),
    "sqlx": (
        {"1_users.up.sql": TABLE_AND_INDEX, "1_users.down.sql": "DROP TABLE users;\n"},
        "mark this file with sqlx's '-- no-transaction' as its first line",
        {
            "1_users.up.sql": "-- no-transaction\n" + TABLE_AND_INDEX,
            "1_users.down.sql": "DROP TABLE users;\n",
        },
    ),
    "goose": (
        {"00001_users.sql": "-- +goose Up\n" + TABLE_AND_INDEX},
        "mark this file with goose's '-- +goose NO TRANSACTION'",
        {"00001_users.sql": "-- +goose NO TRANSACTION\n-- +goose Up\n" + TABLE_AND_INDEX},
    ),
    "dbmate": (
        {"20240101000000_users.sql": "-- migrate:up\n" + TABLE_AND_INDEX},
        "mark this file with dbmate's '-- migrate:up transaction:false'",
        {"20240101000000_users.sql": "-- migrate:up transaction:false\n" + TABLE_AND_INDEX},
    ),
    "flyway": (
        {"V1__users.sql": TABLE_AND_INDEX},
        "mark this file with Flyway's executeInTransaction=false in a V<n>__desc.sql.conf",
        {"V1__users.sql": TABLE_AND_INDEX, "V1__users.sql.conf": "executeInTransaction=false\n"},
    ),
    "node-pg-migrate": (
        {"1700000000000_users.sql": "-- Up Migration\n" + TABLE_AND_INDEX},
        "mark this file with '-- natlangchain: no-transaction' in its up section",
        {
            "1700000000000_users.sql": "-- Up Migration\n-- natlangchain: no-transaction\n"
            + TABLE_AND_INDEX
        },
    ),
}


@pytest.mark.parametrize("layout", list(CONCURRENTLY_IN_A_FILE))
def test_the_25001_advice_is_each_layouts_own_and_can_be_followed(
    database_url: str, tmp_path: Path, layout: str
) -> None:
    """A golang-migrate or prisma file wrapped in BEGIN;/COMMIT; was told to be marked
    no-transaction, which refuses the wrapper; the other layouts were told our marker, not
    their own. Each now gets advice in its layout's terms, and following it applies."""
    files, advice, followed = CONCURRENTLY_IN_A_FILE[layout]
    toml = {"natlangchain-migrate.toml": f'layout = "{layout}"\n'}
    folder = write_migrations(tmp_path / "m", files | toml)
    result = run_cli(*_flags(folder), database_url=database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    assert "cannot run inside a transaction block" in result.stderr
    assert advice in result.stderr
    if layout != "natlangchain":
        assert "natlangchain: no-transaction'," not in result.stderr
    done = write_migrations(tmp_path / "followed", followed | toml)
    result = run_cli(*_flags(done), database_url=database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_ix'::regclass"
    assert asyncio.run(fetchval(database_url, valid)) is True
