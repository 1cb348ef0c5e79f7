"""The command line as users run it: the seed's flags, exit codes, and what it prints (and,
in process, the library behaviour the seed's CLI tests were written for)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import MigrationFailedError, migrate, rollback, run_migrations
from natlangchain_migrate.commands import COMMANDS, find_command
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.locks import default_namespace, lock_key
from tests.conftest import ledger_rows, log_events, run_cli, table_names, write_migrations


def _tables(url: str) -> set[str]:
    return asyncio.run(table_names(url))


def test_status_prints_the_seed_table(database_url: str) -> None:
    asyncio.run(migrate(database_url, target=2))
    result = run_cli("--status", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Migration Status",
        "=" * 50,
        "  ✓ 001_initial_schema: APPLIED",
        "  ✓ 002_add_semantic_search: APPLIED",
        "  ○ 003_add_scaling_tables: PENDING",
        "",
        "Applied: 2 / 3",
    ]


def test_dry_run_lists_pending_in_order_and_changes_nothing(database_url: str) -> None:
    result = run_cli("--dry-run", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "  001_initial_schema",
        "  002_add_semantic_search",
        "  003_add_scaling_tables",
    ]
    assert _tables(database_url) == set()
    assert "lock_acquired" not in [e["event"] for e in log_events(result.stderr)]


# What the files alone refuse, each as a run refuses it (exit 2, naming the file).
REFUSED_BY_THE_FILES = {
    "a backfill's bad setting": (
        "-- natlangchain: backfill table=t key=id max-lag=abc\n"
        "UPDATE t SET b = 1 WHERE id BETWEEN :lo AND :hi;\n",
        "002_x.sql (its backfill line): max-lag=abc",
    ),
    "COPY FROM stdin without rows": ("COPY t FROM stdin;\n", "002_x.sql:1: COPY"),
    "transaction control": ("BEGIN;\nCREATE TABLE u (id int);\nCOMMIT;\n", "002_x.sql:1"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_THE_FILES))
def test_dry_run_refuses_what_the_run_would_refuse(
    case: str, tmp_path: Path, database_url: str
) -> None:
    """--dry-run ran none of the file checks and printed the file as one it would apply."""
    sql, named = REFUSED_BY_THE_FILES[case]
    first = "CREATE TABLE t (id bigint PRIMARY KEY, b int);\n"
    folder = write_migrations(tmp_path / "m", {"001_t.sql": first, "002_x.sql": sql})
    for args in (("--dry-run",), ()):
        result = run_cli("--migrations-dir", str(folder), *args, database_url=database_url)
        assert result.returncode == ExitCode.USAGE, (args, result.stdout, result.stderr)
        assert named in result.stderr
        assert _tables(database_url) == set()


def test_skip_flag_leaves_the_version_out_and_status_says_skipped(database_url: str) -> None:
    """--skip N leaves N out and --status says so (what a later run does: test_apply)."""
    result = run_cli("--skip", "2", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1, 3]
    status = run_cli("--status", "--skip", "2", database_url=database_url).stdout
    assert "○ 002_add_semantic_search: SKIPPED" in status


@pytest.mark.parametrize(
    "file", ["001_make_t.sql", "001_make_t.up.sql", "20240101120000_make_t/migration.sql"]
)
def test_rollback_without_down_file_removes_only_the_record(
    database_url: str, tmp_path: Path, file: str
) -> None:
    folder = write_migrations(tmp_path / "m", {file: "CREATE TABLE t (id int);"})
    assert run_migrations(database_url, migrations_dir=folder).applied
    with capture_logs() as events:
        (undone,) = asyncio.run(rollback(database_url, migrations_dir=folder))
    assert not undone.ran_down_file
    assert asyncio.run(ledger_rows(database_url)) == []
    assert "t" in _tables(database_url)
    warning = [e for e in events if e["event"] == "rollback_record_only"]
    assert warning
    assert "NOT reversed" in warning[0]["warning"]
    assert warning[0]["file"] == file  # the file as it is in the folder, as every event's


def test_broken_file_is_rolled_back_and_named_with_line_and_column(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_good.sql": "CREATE TABLE good (id int);\n",
            "002_bad.sql": "CREATE TABLE half (id int);\n\nINSERT INTO half\n  VALUES (1, 2, 3);\n",
            "003_later.sql": "CREATE TABLE later (id int);\n",
        },
    )
    with capture_logs() as events, pytest.raises(MigrationFailedError) as error:
        asyncio.run(migrate(database_url, migrations_dir=folder))
    assert error.value.exit_code == ExitCode.MIGRATION_FAILED
    failed = [e for e in events if e["event"] == "migration_failed"]
    assert failed[0]["file"] == "002_bad.sql:4:14"  # the "2" that has no column
    assert failed[0]["sqlstate"] == "42601"
    assert [r["version"] for r in asyncio.run(ledger_rows(database_url))] == [1]
    assert _tables(database_url) == {"good", "schema_migrations"}


def test_lock_wait_times_out_with_its_exit_code(database_url: str) -> None:
    async def hold_and_run() -> tuple[int, str]:
        holder = await asyncpg.connect(database_url)
        await holder.execute("SET application_name = 'held-by-test'")
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(default_namespace("public")))
        try:
            result = await asyncio.to_thread(
                run_cli, "--lock-timeout", "3", database_url=database_url
            )
        finally:
            await holder.close()
        return result.returncode, result.stderr

    code, stderr = asyncio.run(hold_and_run())
    assert code == ExitCode.LOCK_TIMEOUT
    failure = next(e for e in log_events(stderr) if e["event"] == "run_failed")
    assert "held-by-test" in failure["error"]
    assert "--lock-timeout" in failure["error"]
    assert any(
        e["event"] == "lock_waiting" and e["holder_application_name"] == "held-by-test"
        for e in log_events(stderr)
    )
    assert _tables(database_url) == set()


def test_usage_errors_exit_2(database_url: str) -> None:
    assert run_cli("--version", "9", database_url=database_url).returncode == ExitCode.USAGE
    assert run_cli("--status", "--rollback", database_url=database_url).returncode == 2
    bad = run_cli(database_url="mysql://nope")
    assert bad.returncode == ExitCode.USAGE, bad.stderr
    duration = run_cli("--pg-lock-timeout", "soon", database_url=database_url)
    assert duration.returncode == ExitCode.USAGE
    assert "--pg-lock-timeout 'soon' is not a duration" in duration.stderr
    variable = run_cli(database_url=database_url, env={"NATLANGCHAIN_MIGRATE_WAIT": "forever"})
    assert variable.returncode == ExitCode.USAGE
    assert "--wait: invalid float value: 'forever'" in variable.stderr


def test_new_writes_next_numbered_files_and_refuses_bad_names(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"007_first.sql": "SELECT 1;"})
    made = run_cli("new", "add_user_email", "--migrations-dir", str(folder), database_url=None)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "007_first.sql",
        "008_add_user_email.down.sql",
        "008_add_user_email.sql",
    ]
    bad = run_cli("new", "Add-Email", "--migrations-dir", str(folder), database_url=None)
    assert bad.returncode == ExitCode.USAGE
    assert "lowercase" in bad.stderr


@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (lambda url: url.replace("127.0.0.1", "nonexistent-host.invalid"), ExitCode.UNREACHABLE),
        (lambda url: url.rsplit(":", 1)[0] + ":1/" + url.rsplit("/", 1)[1], ExitCode.UNREACHABLE),
        (lambda url: url.replace("pw-Secr3t", "wrong-pw-Secr3t"), ExitCode.CONNECTION_REJECTED),
        (lambda url: url.rsplit("/", 1)[0] + "/no_such_db", ExitCode.CONNECTION_REJECTED),
    ],
    ids=["unknown-host", "refused-port", "wrong-password", "unknown-database"],
)
def test_connection_failures_have_exit_codes_and_never_show_the_password(
    database_url: str, make_url: Callable[[str], str], expected: int
) -> None:
    url = make_url(database_url)
    password = url.split(":")[2].split("@")[0]
    for args in ((), ("--status",), ("--dry-run",), ("--check",)):
        result = run_cli(*args, database_url=url)
        assert result.returncode == expected, result.stderr
        assert password not in result.stdout + result.stderr
        assert "Secr3t" not in result.stdout + result.stderr


def test_success_output_never_shows_the_password(database_url: str) -> None:
    for args in ((), ("--status",), ("--status", "--json"), ("--dry-run",), ("--rollback",)):
        result = run_cli(
            *args, database_url=database_url, env={"NATLANGCHAIN_MIGRATE_LOG_FORMAT": "console"}
        )
        assert result.returncode == 0, result.stderr
        assert "Secr3t" not in result.stdout + result.stderr


def test_logs_are_json_lines_when_stderr_is_not_a_terminal(database_url: str) -> None:
    result = run_cli(database_url=database_url, env={"NATLANGCHAIN_MIGRATE_LOG_FORMAT": ""})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines
    assert len(log_events(result.stderr)) == len(lines)
    events = [e["event"] for e in log_events(result.stderr)]
    assert events[0] == "migrate_started"
    assert events[-1] == "migrate_done"
    assert events.count("migration_applying") == events.count("migration_applied") == 3


def test_schema_flag_puts_ledger_and_tables_in_that_schema(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (id int);\n"
            "CREATE FUNCTION t_count() RETURNS bigint LANGUAGE sql "
            "SET search_path FROM CURRENT AS $$ SELECT count(*) FROM t $$;\n"
        },
    )
    args = ("--migrations-dir", str(folder), "--schema", "app")
    result = run_cli(*args, database_url=database_url)
    assert result.returncode == 0, result.stderr

    async def where() -> tuple[set[str], object]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'app'")
            return {r["tablename"] for r in rows}, await conn.fetchval("SELECT app.t_count()")
        finally:
            await conn.close()

    tables, count = asyncio.run(where())
    assert tables == {"t", "schema_migrations"}
    assert count == 0
    assert _tables(database_url) == set()
    assert "Applied: 1 / 1" in run_cli("--status", *args, database_url=database_url).stdout
    assert (
        "Applied: 0 / 1"
        in run_cli("--status", "--migrations-dir", str(folder), database_url=database_url).stdout
    )


def test_syntax_error_in_a_file_that_commits_is_reported_like_any_other(
    database_url: str, tmp_path: Path
) -> None:
    """The issue's case: a syntax error beside a COMMIT line is exit 1 with file:line:column,
    not a parser's traceback class."""
    folder = write_migrations(
        tmp_path / "m", {"001_bad.sql": "CREATE TABLE x (id int primary key;\nCOMMIT;\n"}
    )
    with capture_logs() as events, pytest.raises(MigrationFailedError) as error:
        asyncio.run(migrate(database_url, migrations_dir=folder))
    assert error.value.exit_code == ExitCode.MIGRATION_FAILED
    files = [e.get("file") for e in events if e["event"] == "migration_failed"]
    assert "001_bad.sql:1:35" in files, events
    assert "ParseError" not in str(error.value) + str(events)


def test_version_word_and_short_flag_print_the_installed_version(database_url: str) -> None:
    from importlib.metadata import version

    installed = version("natlangchain-migrate")
    for args in (("version",), ("-V",), ("--status", "-V")):
        run = run_cli(*args, database_url=database_url)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"natlangchain-migrate {installed} ("), run.stdout
    # --version keeps the seed's meaning: apply up to a version.
    assert run_cli("--version", "x", database_url=database_url).returncode == ExitCode.USAGE


def test_new_takes_its_options_before_or_after_the_name_and_never_invents_a_folder(
    tmp_path: Path,
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_first.sql": "SELECT 1;"})
    before = run_cli("new", "--migrations-dir", str(folder), "second", database_url=None)
    after = run_cli("new", "third", "--migrations-dir", str(folder), database_url=None)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert {p.name for p in folder.glob("*.sql")} >= {"002_second.sql", "003_third.sql"}
    typo = tmp_path / "typo" / "migrations"
    refused = run_cli("new", "x", "--migrations-dir", str(typo), database_url=None)
    assert refused.returncode == ExitCode.USAGE
    assert f"migrations directory {typo} does not exist" in refused.stderr
    assert not typo.parent.exists()


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("--lock-timeout", "nan"), {}, "--lock-timeout nan"),
        (("--lock-timeout", "-5"), {}, "--lock-timeout -5.0"),
        (("--lock-timeout", "inf"), {}, "--lock-timeout inf"),
        ((), {"NATLANGCHAIN_MIGRATE_LOCK_TIMEOUT": "nan"}, "--lock-timeout nan"),
        (("--wait", "-1"), {}, "--wait -1.0"),
        ((), {"NATLANGCHAIN_MIGRATE_WAIT": "nan"}, "--wait nan"),
        (("--lock-retries", "-2"), {}, "--lock-retries -2"),
    ],
)
def test_waits_and_counts_must_be_finite_and_not_negative(
    database_url: str, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    """nan would wait forever and a negative wait would time out at once: both refused
    before anything connects, naming the flag (also when the variable set it)."""
    for action in ((), ("--rollback",), ("--status",)):
        result = run_cli(*action, *args, database_url=database_url, env=env)
        assert result.returncode == ExitCode.USAGE, (action, result.stderr)
        assert named in result.stderr
        assert "lock_acquired" not in result.stderr
    assert asyncio.run(table_names(database_url)) == set()


def test_an_unencoded_at_sign_in_the_password_is_a_usage_error(database_url: str) -> None:
    host_part = database_url.split("@", 1)[1]
    url = f"postgresql://postgres:p@ss{'@'}{host_part}"
    result = run_cli("--check", database_url=url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "percent-encode '@'" in result.stderr
    assert "p@ss" not in result.stdout + result.stderr
    assert "ss@" not in result.stdout + result.stderr


@pytest.mark.parametrize("word", sorted(COMMANDS))
def test_every_subcommand_prints_its_help(word: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = find_command(word)
    assert command is not None
    with pytest.raises(SystemExit) as exited:
        command(["--help"])
    assert exited.value.code == 0
    assert word in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["baseline", "1"],
        ["adopt", "--from", "goose"],
        ["dump-schema"],
        ["contract"],
        ["verify"],
        ["lint"],
    ],
)
def test_a_schema_name_postgresql_would_truncate_is_refused(command: list[str]) -> None:
    unreachable = "postgresql://u@127.0.0.1:1/x"  # refused before any connection
    result = run_cli(*command, "--schema", "s" * 64, database_url=unreachable)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "is 64 bytes; PostgreSQL names are 1 to 63 bytes" in result.stderr


@pytest.mark.parametrize("command", ["baseline", "adopt", "verify", "new"])
def test_a_command_after_the_options_is_named_with_where_it_goes(command: str) -> None:
    """Before: argparse's "unrecognized arguments: baseline 3" alone, with no word on
    what to change."""
    result = run_cli("--migrations-dir", "m", command, "3", database_url=None)
    assert result.returncode == ExitCode.USAGE
    assert f"'{command}' is a command: put it first" in result.stderr
    assert f"natlangchain-migrate {command} " in result.stderr
