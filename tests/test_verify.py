"""``verify``: the shipped down files pass; a down file that forgets an index or a column
default is named with the difference (exit 22); the scratch database is dropped after
success, failure, a bad migration and SIGINT; no password in any output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from harness.faults.history import write_history
from harness.servers.pgcluster import PASSWORD
from harness.servers.sql import execute as sql_execute
from harness.servers.sql import fetchval as sql_fetchval
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, run_cli, write_migrations

ITEMS = {
    "001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, name text);\n",
    "001_items.down.sql": "DROP TABLE items;\n",
}
INDEX_AND_DEFAULT = "CREATE INDEX items_name ON items (name);\n" + (
    "ALTER TABLE items ALTER COLUMN name SET DEFAULT 'unnamed';\n"
)


def _scratch_database(stderr: str) -> str:
    """The scratch database the run named in its verify_started event."""
    started = [e for e in log_events(stderr) if e["event"] == "verify_started"]
    assert started, stderr
    return str(started[0]["scratch_database"])


def _exists(admin_url: str, database: str) -> bool:
    query = f"SELECT count(*) FROM pg_database WHERE datname = '{database}'"
    return bool(asyncio.run(sql_fetchval(admin_url, query)))


def _verify(folder: Path | None, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    where = ["--migrations-dir", str(folder)] if folder else []
    result = run_cli("verify", *where, *extra, database_url=url)
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_the_shipped_migrations_pass_and_the_scratch_database_is_dropped(
    admin_url: str, database_url: str
) -> None:
    result = _verify(None, database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    checked = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("✓")]
    assert checked == [
        "✓ 003_add_scaling_tables",
        "✓ 002_add_semantic_search",
        "✓ 001_initial_schema",
    ]
    assert not _exists(admin_url, _scratch_database(result.stderr))
    assert "Verified 3 migrations on scratch database nlc_verify_" in result.stdout
    # The database named by the URL is only where the scratch one was created from.
    assert asyncio.run(sql_fetchval(database_url, "SELECT to_regclass('entries')")) is None


def test_json_on_success_lists_what_was_verified_newest_first(
    database_url: str, tmp_path: Path
) -> None:
    extra = {
        "002_more.sql": "CREATE TABLE more (id int);\n",
        "002_more.down.sql": "DROP TABLE more;\n",
    }
    folder = write_migrations(tmp_path / "m", ITEMS | extra)
    result = _verify(folder, database_url, "--json")
    assert result.returncode == ExitCode.OK, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome == {
        "ok": True,
        "exit_code": 0,
        "scratch_database": _scratch_database(result.stderr),
        "verified": [{"version": 2, "name": "002_more"}, {"version": 1, "name": "001_items"}],
    }


def test_a_down_file_that_forgets_an_index_is_named_with_the_index(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        ITEMS
        | {
            "002_name_index.sql": INDEX_AND_DEFAULT,
            "002_name_index.down.sql": "ALTER TABLE items ALTER COLUMN name DROP DEFAULT;\n",
        },
    )
    result = _verify(folder, database_url)
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stderr
    [failed] = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert failed["error"] == (
        "002_name_index.down.sql does not restore the schema from before 002_name_index: "
        "+ CREATE INDEX items_name ON public.items USING btree (name);"
    )
    assert "+CREATE INDEX items_name ON public.items USING btree (name);" in result.stdout
    assert not _exists(admin_url, _scratch_database(result.stderr))


def test_a_down_file_that_forgets_a_column_default_shows_it_in_the_json_diff(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        ITEMS
        | {
            "002_name_index.sql": INDEX_AND_DEFAULT,
            "002_name_index.down.sql": "DROP INDEX items_name;\n",
            "003_other.sql": "CREATE TABLE other (id int);\n",
            "003_other.down.sql": "DROP TABLE other;\n",
        },
    )
    result = _verify(folder, database_url, "--json")
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ok"] is False
    assert outcome["exit_code"] == 22
    assert outcome["verified"] == [3]
    failure = outcome["failure"]
    assert (failure["version"], failure["name"], failure["step"], failure["file"]) == (
        2,
        "002_name_index",
        "down",
        "002_name_index.down.sql",
    )
    changed = [line for line in failure["diff"].splitlines() if line[:1] in "+-"]
    assert changed == [
        "--- before 002_name_index",
        "+++ after 002_name_index.down.sql",
        "-    name text",
        "+    name text DEFAULT 'unnamed'::text",
    ]
    assert not _exists(admin_url, _scratch_database(result.stderr))


def test_a_migration_that_gives_another_schema_when_applied_again_is_named(
    database_url: str, tmp_path: Path
) -> None:
    """Its down file restores the schema, but the migration depends on state the schema
    does not show (a sequence's position), so applying it again differs."""
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_counter.sql": "CREATE SEQUENCE counter;\n",
            "001_counter.down.sql": "DROP SEQUENCE counter;\n",
            "002_numbered.sql": "DO $$ BEGIN EXECUTE format('CREATE TABLE t%s (id int)', "
            "nextval('counter')); END $$;\n",
            "002_numbered.down.sql": "DO $$ DECLARE r record; BEGIN FOR r IN SELECT tablename "
            "FROM pg_tables WHERE tablename ~ '^t[0-9]+$' LOOP EXECUTE format('DROP TABLE %I', "
            "r.tablename); END LOOP; END $$;\n",
        },
    )
    result = _verify(folder, database_url, "--json")
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stderr
    failure = json.loads(result.stdout)["failure"]
    assert (failure["version"], failure["step"], failure["file"]) == (
        2,
        "up again",
        "002_numbered.sql",
    )
    assert "-CREATE TABLE public.t1 (" in failure["diff"]
    assert "+CREATE TABLE public.t2 (" in failure["diff"]


def test_a_migration_without_a_down_file_cannot_be_verified(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m", ITEMS | {"002_more.sql": "CREATE TABLE more (id int);\n"}
    )
    result = _verify(folder, database_url)
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED
    [failed] = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert failed["error"].startswith(
        "cannot verify 002_more: it has no down file; write 002_more.down.sql"
    )
    assert not [e for e in log_events(result.stderr) if e["event"] == "verify_started"]


def test_a_failing_migration_keeps_its_own_exit_code_and_the_scratch_database_is_dropped(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        ITEMS | {"002_bad.sql": "CREATE TABLE broken (id int,);\n", "002_bad.down.sql": ""},
    )
    result = _verify(folder, database_url)
    assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
    [failed] = [e for e in log_events(result.stderr) if e["event"] == "migration_failed"]
    assert failed["file"] == "002_bad.sql:1:29"
    assert not _exists(admin_url, _scratch_database(result.stderr))


def test_a_role_without_createdb_is_told_the_command_that_fixes_it(
    database_url: str, tmp_path: Path
) -> None:
    role_password = "verify-role-pw-never-printed"
    asyncio.run(
        sql_execute(database_url, f"CREATE ROLE nocreatedb LOGIN PASSWORD '{role_password}'")
    )
    try:
        parts = urlsplit(database_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        url = urlunsplit(parts._replace(netloc=f"nocreatedb:{role_password}@{host}"))
        result = _verify(None, url)
        assert result.returncode == ExitCode.PRIVILEGE, result.stderr
        [failed] = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
        assert "role nocreatedb may not create the scratch database" in failed["error"]
        assert "ALTER ROLE nocreatedb CREATEDB;" in failed["error"]
        assert role_password not in result.stdout + result.stderr
        # baseline-file works on a scratch database too, and names itself (it said verify).
        folder = write_migrations(tmp_path / "m", ITEMS)
        written = run_cli("baseline-file", "--migrations-dir", str(folder), database_url=url)
        assert written.returncode == ExitCode.PRIVILEGE, written.stderr
        assert "the scratch database baseline-file works in" in written.stderr
        assert "or run baseline-file on another server" in written.stderr
        assert role_password not in written.stdout + written.stderr
    finally:
        asyncio.run(sql_execute(database_url, "DROP ROLE nocreatedb"))


@pytest.mark.system
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.parametrize("command", ["verify", "baseline-file"])
def test_a_signal_during_verify_drops_the_scratch_database(
    admin_url: str, database_url: str, tmp_path: Path, signum: signal.Signals, command: str
) -> None:
    """And says so: the message said 'what committed before it stays applied, and the next
    run goes on from there', as if the target database had been migrated."""
    folder = write_migrations(
        tmp_path / "m",
        ITEMS | {"002_slow.sql": "SELECT pg_sleep(60);\n", "002_slow.down.sql": ""},
    )
    env = os.environ | {"DATABASE_URL": database_url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    verify = subprocess.Popen(
        [sys.executable, "-m", "natlangchain_migrate", command, "--migrations-dir", str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sleeping = (
        "SELECT datname FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
        "AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 60
    scratch = None
    while scratch is None and time.monotonic() < deadline:
        assert verify.poll() is None, verify.communicate()
        scratch = asyncio.run(sql_fetchval(admin_url, sleeping))
        time.sleep(0.05)
    assert isinstance(scratch, str)
    assert scratch.startswith("nlc_verify_")
    verify.send_signal(signum)
    _, stderr = verify.communicate(timeout=60)
    expected = ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.TERMINATED
    assert verify.returncode == expected, stderr
    interrupted = log_events(stderr)[-1]
    assert interrupted["event"] == "run_interrupted"
    assert interrupted["error"] == (
        f"stopped by {signum.name}: {command} works only in a scratch database, which was "
        "dropped (a verify_scratch_left warning names it if it could not be); nothing in "
        "the target database changed"
    )
    if command == "verify":
        assert _scratch_database(stderr) == scratch
    assert not _exists(admin_url, scratch)
    assert PASSWORD not in stderr
    assert not (folder / "002_schema.baseline.sql").exists()


def test_one_migration_is_singular_and_connecting_names_database_url(
    database_url: str, tmp_path: Path
) -> None:
    """'Verified 1 migrations'; and the scratch databases' connecting events said
    source '--database-url or dsn=' for a URL from DATABASE_URL (verify and baseline-file)."""
    folder = write_migrations(tmp_path / "m", ITEMS)
    result = _verify(folder, database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert "Verified 1 migration on scratch database nlc_verify_" in result.stdout
    written = run_cli("baseline-file", "--migrations-dir", str(folder), database_url=database_url)
    assert written.returncode == ExitCode.OK, written.stderr
    for run in (result, written):
        sources = {e["source"] for e in log_events(run.stderr) if e["event"] == "connecting"}
        assert sources == {"DATABASE_URL"}, run.stderr


def test_the_scratch_database_url_keeps_the_connection_settings() -> None:
    """A key=value DSN or a URL naming its database in the query becomes a URL to the
    scratch database with the same host, user and password."""
    from natlangchain_migrate.dsn import with_database

    assert with_database("host=/run/pg port=5433 user=u password=p dbname=app", "s") == (
        "postgresql://u:p@/s?host=%2Frun%2Fpg&port=5433"
    )
    assert with_database("postgresql://u:p@db:5432/?dbname=app&sslmode=require", "s") == (
        "postgresql://u:p@db:5432/s?sslmode=require"
    )


def test_verify_help_names_its_exit_code_and_flags() -> None:
    result = run_cli("verify", "--help", database_url=None)
    assert result.returncode == 0
    assert "22 at the first that does not" in " ".join(result.stdout.split())
    assert "--json" in result.stdout


@pytest.mark.slow
def test_the_generated_history_passes(database_url: str, tmp_path: Path) -> None:
    """20 migrations of every kind a mature project keeps, each with a down file that
    really undoes it (partitions, materialized views, enum values, renames, triggers)."""
    folder = tmp_path / "history"
    write_history(folder, 20, seed=1)
    result = _verify(folder, database_url, "--json")
    assert result.returncode == ExitCode.OK, result.stderr
    assert [item["version"] for item in json.loads(result.stdout)["verified"]] == list(
        range(20, 0, -1)
    )


def test_repeatables_are_left_out_of_verify_s_scratch_runs(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    """A repeatable has no down file and belongs to no version: verify checks the versioned
    files alone, even when a repeatable needs a table that a later version creates."""
    folder = write_migrations(
        tmp_path / "m",
        {
            **ITEMS,
            "002_tags.sql": "CREATE TABLE tags (id int);\n",
            "002_tags.down.sql": "DROP TABLE tags;\n",
            "R__f.sql": "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
            "R__tag_ids.sql": "CREATE OR REPLACE VIEW tag_ids AS SELECT id FROM tags;\n",
        },
    )
    result = _verify(folder, database_url)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert not _exists(admin_url, _scratch_database(result.stderr))


def _sections(up_marker: str, down_marker: str, stem: str) -> Any:
    def files(n: int, name: str, up: str, down: str | None) -> dict[str, str]:
        text = f"{up_marker}\n{up}" + (f"{down_marker}\n{down}" if down is not None else "")
        return {stem.format(n=n, name=name): text}

    return files


def _pair(up_name: str, down_name: str) -> Any:
    def files(n: int, name: str, up: str, down: str | None) -> dict[str, str]:
        made = {up_name.format(n=n, name=name): up}
        return made | ({down_name.format(n=n, name=name): down} if down is not None else {})

    return files


# Each layout: its files of version n (the down file, or section, left out when None);
# what verify says to write for 2_more, and the name it gives that down file.
DOWNS_BY_LAYOUT = {
    "golang-migrate": (
        _pair("{n}_{name}.up.sql", "{n}_{name}.down.sql"),
        "write 2_more.down.sql",
        "2_more.down.sql",
    ),
    "prisma": (
        _pair("2024010100000{n}_{name}/migration.sql", "2024010100000{n}_{name}/down.sql"),
        "write 20240101000002_more/down.sql beside its migration.sql (prisma itself applies "
        "no down file",
        "20240101000002_more/down.sql",
    ),
    "flyway": (_pair("V{n}__{name}.sql", "U{n}__{name}.sql"), "write U2__more.sql", "U2__more.sql"),
    "goose": (
        _sections("-- +goose Up", "-- +goose Down", "0000{n}_{name}.sql"),
        "add a '-- +goose Down' section to 00002_more.sql",
        "the down section of 00002_more.sql",
    ),
    "dbmate": (
        _sections("-- migrate:up", "-- migrate:down", "2024010100000{n}_{name}.sql"),
        "add a '-- migrate:down' section to 20240101000002_more.sql",
        "the down section of 20240101000002_more.sql",
    ),
    "node-pg-migrate": (
        _sections("-- Up Migration", "-- Down Migration", "170000000000{n}_{name}.sql"),
        "add a '-- Down Migration' section to 1700000000002_more.sql",
        "the down section of 1700000000002_more.sql",
    ),
}


@pytest.mark.parametrize("layout", list(DOWNS_BY_LAYOUT))
def test_verify_names_the_down_file_as_each_layout_writes_it(
    database_url: str, tmp_path: Path, layout: str
) -> None:
    """In a prisma folder verify said to write 20240101000002_more.down.sql, a file prisma's
    layout does not read (its down file is <folder>/down.sql); in goose, dbmate and
    node-pg-migrate, whose down SQL is a section of the file, and Flyway (U files), it
    named a .down.sql too. Following what it says now makes verify pass."""
    files, advice, down = DOWNS_BY_LAYOUT[layout]
    toml = {"natlangchain-migrate.toml": f'layout = "{layout}"\n'}
    first = files(1, "items", "CREATE TABLE items (id int);\n", "DROP TABLE items;\n")

    def _run(more_down: str | None) -> subprocess.CompletedProcess[str]:
        more = files(2, "more", "CREATE TABLE more (id int);\n", more_down)
        folder = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        return _verify(write_migrations(folder, toml | first | more), database_url)

    result = _run(None)
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stderr
    [failed] = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert failed["error"].startswith("cannot verify "), failed["error"]
    assert f"it has no down file; {advice}" in failed["error"], failed["error"]
    result = _run("SELECT 1;\n")  # a down file that undoes nothing
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stderr
    [failed] = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert f"{down} does not restore the schema" in failed["error"], failed["error"]
    assert _run("DROP TABLE more;\n").returncode == ExitCode.OK
