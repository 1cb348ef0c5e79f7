"""Expand and contract in one migration, against a real PostgreSQL: a contract part runs
once, under the lock, only when no replica of an older release is alive."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from harness.servers.sql import execute, fetch, fetchval
from natlangchain_migrate import ConfigurationError, DriftError, contract, migrate, repair, rollback
from natlangchain_migrate.contract_plan import ContractRow, ContractState, plan_contracts, runnable
from natlangchain_migrate.discovery import Migration, checksum, load_migrations
from natlangchain_migrate.errors import ExitCode, MigrationFailedError
from natlangchain_migrate.replicas import Replica, start_heartbeat
from tests.conftest import log_events, migration_locks_held, run_cli, write_migrations

EXPAND_1 = "CREATE TABLE users (id int PRIMARY KEY, fullname text);"
# 002 renames fullname to display_name: expand adds the new column, contract drops the old.
EXPAND_2 = (
    "ALTER TABLE users ADD COLUMN display_name text;\nUPDATE users SET display_name = fullname;"
)
CONTRACT_2 = (
    "-- the old release reads fullname: drop it only once it is gone\n"
    "ALTER TABLE users DROP COLUMN fullname;"
)
CONTRACT_DOWN_2 = (
    "ALTER TABLE users ADD COLUMN fullname text;\nUPDATE users SET fullname = display_name;"
)

OLD = {"001_users.sql": EXPAND_1}
NEW = {
    "001_users.sql": EXPAND_1,
    "002_display_name.sql": EXPAND_2,
    "002_display_name.down.sql": "ALTER TABLE users DROP COLUMN display_name;",
    "002_display_name.contract.sql": CONTRACT_2,
    "002_display_name.contract.down.sql": CONTRACT_DOWN_2,
}


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    return write_migrations(tmp_path / "old", OLD), write_migrations(tmp_path / "new", NEW)


async def _columns(url: str) -> set[str]:
    rows = await fetch(
        url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
    )
    return {row["column_name"] for row in rows}


async def _contract_rows(url: str) -> list[asyncpg.Record]:
    if await fetchval(url, "SELECT to_regclass('schema_contracts')") is None:
        return []
    return await fetch(url, "SELECT * FROM schema_contracts ORDER BY version")


@pytest.fixture
def old_replica(database_url: str, tmp_path: Path) -> Iterator[object]:
    """A replica of the old release (release 1) heartbeating in this process."""
    old, _ = _folders(tmp_path)
    beat = start_heartbeat(database_url, migrations_dir=old, interval=0.2, label="old-pod")
    try:
        yield beat
    finally:
        beat.stop()


# --- the plan, pure -----------------------------------------------------------------


def _part(version: int) -> Migration:
    sql = f"DROP TABLE t{version};"
    name = f"{version:03d}_x.contract"
    return Migration(version, name, f"{name}.sql", sql, checksum(sql))


def _replica(release: int) -> Replica:
    from datetime import UTC, datetime

    return Replica(f"r{release}", release, None, datetime.now(UTC), 1.0)


@pytest.mark.parametrize(
    ("expanded", "rows", "alive", "force", "states", "run"),
    [
        ({2, 3}, [], [], False, ["PENDING", "PENDING"], [2, 3]),
        ({2, 3}, [], [_replica(1), _replica(3)], False, ["WAITING", "WAITING"], []),
        ({2, 3}, [], [_replica(2)], False, ["PENDING", "WAITING"], [2]),
        ({2, 3}, [], [_replica(1)], True, ["WAITING", "WAITING"], [2, 3]),
        ({2}, [], [], True, ["PENDING", "EXPAND_PENDING"], [2]),
        (
            {2, 3},
            [ContractRow(2, "002_x.contract", checksum("DROP TABLE t2;"))],
            [_replica(2)],
            False,
            ["APPLIED", "WAITING"],
            [],
        ),
        (
            {2, 3},
            [ContractRow(2, "002_x.contract", "other")],
            [],
            False,
            ["CHANGED", "PENDING"],
            [],
        ),
    ],
)
def test_plan_runs_a_part_only_past_every_older_replica_in_version_order(
    expanded: set[int],
    rows: list[ContractRow],
    alive: list[Replica],
    force: bool,
    states: list[str],
    run: list[int],
) -> None:
    entries = plan_contracts([_part(2), _part(3)], expanded, rows, alive, highest_local=3)
    assert [entry.state.value for entry in entries] == states
    assert [entry.version for entry in runnable(entries, force=force)] == run


def test_plan_lists_a_vanished_part_as_missing_but_not_a_newer_releases_row() -> None:
    rows = [ContractRow(2, "002_x.contract", "a"), ContractRow(9, "009_y.contract", "b")]
    entries = plan_contracts([], set(), rows, [], highest_local=3)
    assert [(entry.version, entry.state) for entry in entries] == [(2, ContractState.MISSING)]


# --- discovery ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"001_a.sql": "SELECT 1;", "002_b.contract.sql": "SELECT 1;"}, "002_b.contract.sql"),
        ({"001_a.sql": "SELECT 1;", "001_b.contract.sql": "SELECT 1;"}, "001_b.contract.sql"),
        (
            {"001_a.sql": "SELECT 1;", "001_a.contract.down.sql": "SELECT 1;"},
            "001_a.contract.down.sql",
        ),
    ],
)
def test_a_contract_file_without_its_migration_is_a_one_line_error_naming_it(
    files: dict[str, str], named: str, tmp_path: Path, database_url: str
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        load_migrations(folder)
    done = run_cli("contract", "--migrations-dir", str(folder), database_url=database_url)
    assert done.returncode == ExitCode.USAGE
    failure = [e for e in log_events(done.stderr) if e["event"] == "run_failed"]
    assert named in failure[0]["error"]
    assert "\n" not in failure[0]["error"]


def test_contract_files_are_found_beside_their_migration_and_in_migrations_sum(
    tmp_path: Path,
) -> None:
    _, new = _folders(tmp_path)
    migrations = load_migrations(new)
    assert [m.filename for m in migrations] == ["001_users.sql", "002_display_name.sql"]
    assert migrations[1].contract_file is not None
    assert migrations[1].contract_file.name == "002_display_name.contract.sql"
    written = run_cli("sum", "--migrations-dir", str(new), database_url=None)
    assert written.returncode == 0, written.stderr
    manifest = (new / "migrations.sum").read_text(encoding="utf-8")
    assert "002_display_name.contract.sql" in manifest
    assert "002_display_name.contract.down.sql" in manifest
    (new / "002_display_name.contract.sql").write_text(CONTRACT_2 + "\n-- edited", "utf-8")
    checked = run_cli("sum", "--check", "--migrations-dir", str(new), database_url=None)
    assert checked.returncode == ExitCode.CHECK_DRIFT
    assert "002_display_name.contract.sql" in checked.stdout


# --- running ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_expand_part_runs_at_start_up_and_the_contract_part_does_not(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    report = await migrate(database_url, migrations_dir=new)
    assert [result.version for result in report.applied] == [1, 2]
    assert report.contracts == []
    assert await _columns(database_url) == {"id", "fullname", "display_name"}
    assert await _contract_rows(database_url) == []


def test_contract_waits_while_an_old_replica_is_alive_then_runs_once_it_is_gone(
    database_url: str, tmp_path: Path
) -> None:
    old, new = _folders(tmp_path)
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    beat = start_heartbeat(database_url, migrations_dir=old, interval=0.2, label="old-pod")
    try:
        waited = run_cli(
            "contract", "--json", "--migrations-dir", str(new), database_url=database_url
        )
        assert waited.returncode == ExitCode.CONTRACT_WAITING, waited.stderr
        outcome = json.loads(waited.stdout)
        assert outcome["applied"] == []
        (entry,) = outcome["waiting"]
        assert entry["name"] == "002_display_name.contract"
        assert entry["state"] == "WAITING"
        assert [(r["release"], r["label"]) for r in entry["waiting_for"]] == [(1, "old-pod")]
        assert asyncio.run(_columns(database_url)) == {"id", "fullname", "display_name"}
        text = run_cli("contract", "--migrations-dir", str(new), database_url=database_url)
        assert "Waiting: 002_display_name.contract: replicas of an older release" in text.stdout
        assert "release 1, old-pod" in text.stdout
    finally:
        beat.stop()
    done = run_cli("contract", "--migrations-dir", str(new), database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert "Applied 002_display_name.contract" in done.stdout
    assert asyncio.run(_columns(database_url)) == {"id", "display_name"}
    (row,) = asyncio.run(_contract_rows(database_url))
    assert (row["version"], row["name"], row["forced"]) == (2, "002_display_name.contract", False)
    assert row["checksum"] == checksum(CONTRACT_2)
    assert row["execution_ms"] >= 0
    again = run_cli("contract", "--migrations-dir", str(new), database_url=database_url)
    assert again.returncode == 0
    assert "Nothing to contract" in again.stdout
    assert asyncio.run(migration_locks_held(database_url)) == 0


def test_a_replica_killed_without_a_word_counts_as_gone_after_the_max_age(
    database_url: str, tmp_path: Path
) -> None:
    old, new = _folders(tmp_path)
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    script = (
        "import sys, time, natlangchain_migrate as m\n"
        f"m.start_heartbeat({database_url!r}, migrations_dir={str(old)!r}, interval=0.1)\n"
        "print('registered', flush=True)\n"
        "time.sleep(600)\n"
    )
    replica = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert replica.stdout is not None
        while replica.stdout.readline().strip() != "registered":  # its logs come first
            pass
        alive = run_cli(
            "contract",
            "--replica-max-age",
            "2s",
            "--migrations-dir",
            str(new),
            database_url=database_url,
        )
        assert alive.returncode == ExitCode.CONTRACT_WAITING
    finally:
        replica.kill()  # SIGKILL: no atexit, the row stays
        replica.communicate()
    assert asyncio.run(fetchval(database_url, "SELECT count(*) FROM schema_replicas")) == 1
    # Its seen_at stops moving; past the max age it no longer holds the contract part back.
    asyncio.run(execute(database_url, "SELECT pg_sleep(0.5)"))
    gone = run_cli(
        "contract",
        "--replica-max-age",
        "400ms",
        "--migrations-dir",
        str(new),
        database_url=database_url,
    )
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert asyncio.run(_columns(database_url)) == {"id", "display_name"}


def test_force_runs_past_alive_old_replicas_and_says_which(
    database_url: str, tmp_path: Path, old_replica: object
) -> None:
    _, new = _folders(tmp_path)
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    done = run_cli("contract", "--force", "--migrations-dir", str(new), database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert "(forced past alive old replicas)" in done.stdout
    (forced,) = [e for e in log_events(done.stderr) if e["event"] == "contract_forced"]
    assert forced["level"] == "warning"
    assert forced["version"] == 2
    assert [(r["release"], r["label"]) for r in forced["overrides"]] == [(1, "old-pod")]
    (row,) = asyncio.run(_contract_rows(database_url))
    assert row["forced"] is True
    status = run_cli("--status", "--migrations-dir", str(new), database_url=database_url)
    assert "✓ 002_display_name.contract: APPLIED (forced)" in status.stdout


def test_force_never_runs_a_part_whose_expand_part_is_not_applied(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    done = run_cli(
        "contract", "--force", "--json", "--migrations-dir", str(new), database_url=database_url
    )
    assert done.returncode == ExitCode.CONTRACT_WAITING
    (entry,) = json.loads(done.stdout)["waiting"]
    assert entry["state"] == "EXPAND_PENDING"
    text = run_cli("contract", "--migrations-dir", str(new), database_url=database_url)
    assert "its expand part is not applied yet" in text.stdout


@pytest.mark.anyio
async def test_dry_run_says_what_would_run_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new)
    report = await contract(database_url, migrations_dir=new, dry_run=True)
    assert [(r.name, r.status) for r in report.pending] == [
        ("002_display_name.contract", "pending")
    ]
    assert report.applied == []
    assert await fetchval(database_url, "SELECT to_regclass('schema_contracts')") is None
    assert await _columns(database_url) == {"id", "fullname", "display_name"}
    done = run_cli("contract", "--dry-run", "--migrations-dir", str(new), database_url=database_url)
    assert done.returncode == 0
    assert "Would apply, in order:\n  002_display_name.contract" in done.stdout


@pytest.mark.slow
def test_eight_processes_running_contract_at_once_run_the_part_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    env = {**os.environ, "DATABASE_URL": database_url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    runners = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "natlangchain_migrate",
                "contract",
                "--migrations-dir",
                str(new),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(8)
    ]
    outputs = [runner.communicate(timeout=180) for runner in runners]
    assert [runner.returncode for runner in runners] == [0] * 8, outputs[0][1][-800:]
    events = [event for _, err in outputs for event in log_events(err)]
    # DROP COLUMN without IF EXISTS: a second run would have failed.
    assert [e["version"] for e in events if e["event"] == "contract_applied"] == [2]
    assert len(asyncio.run(_contract_rows(database_url))) == 1
    assert asyncio.run(migration_locks_held(database_url)) == 0


@pytest.mark.anyio
async def test_a_failing_contract_part_points_into_its_file_and_leaves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    (new / "002_display_name.contract.sql").write_text(
        "ALTER TABLE users DROP COLUMN fullname;\nALTER TABLE users DROPP COLUMN x;\n", "utf-8"
    )
    await migrate(database_url, migrations_dir=new)
    with pytest.raises(MigrationFailedError) as failed:
        await contract(database_url, migrations_dir=new)
    assert failed.value.location == "002_display_name.contract.sql:2:19"
    assert failed.value.sqlstate == "42601"
    assert await _columns(database_url) == {"id", "fullname", "display_name"}
    assert await _contract_rows(database_url) == []


# --- at start-up --------------------------------------------------------------------


@pytest.mark.anyio
async def test_auto_contract_runs_after_the_expand_parts_when_no_old_replica_is_alive(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    report = await migrate(database_url, migrations_dir=new, auto_contract=True)
    assert [r.version for r in report.applied] == [1, 2]
    assert [(r.version, r.forced) for r in report.contracts] == [(2, False)]
    assert await _columns(database_url) == {"id", "display_name"}
    again = await migrate(database_url, migrations_dir=new, auto_contract=True)
    assert again.up_to_date
    assert again.contracts == []


@pytest.mark.anyio
async def test_auto_contract_is_skipped_with_one_debug_event_while_an_old_replica_is_alive(
    database_url: str, tmp_path: Path, old_replica: object
) -> None:
    _, new = _folders(tmp_path)
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=new, auto_contract=True)
    assert report.contracts == []
    (waiting,) = [e for e in events if e["event"] == "contract_waiting"]
    assert waiting["log_level"] == "debug"
    assert waiting["versions"] == [2]
    assert await _columns(database_url) == {"id", "fullname", "display_name"}


def test_auto_contract_from_the_flag_and_the_variable_on_an_up_to_date_start_up(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    run_cli("sum", "--migrations-dir", str(new), database_url=None)  # the fast path too
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    assert asyncio.run(_contract_rows(database_url)) == []
    by_variable = run_cli(
        "--migrations-dir",
        str(new),
        database_url=database_url,
        env={"NATLANGCHAIN_MIGRATE_AUTO_CONTRACT": "1"},
    )
    assert by_variable.returncode == 0, by_variable.stderr
    assert [
        e["version"] for e in log_events(by_variable.stderr) if e["event"] == "contract_applied"
    ] == [2]
    flag = run_cli("--auto-contract", "--migrations-dir", str(new), database_url=database_url)
    assert flag.returncode == 0
    assert not [e for e in log_events(flag.stderr) if e["event"] == "contract_applied"]
    bad = run_cli(
        "--migrations-dir",
        str(new),
        database_url=database_url,
        env={"NATLANGCHAIN_MIGRATE_AUTO_CONTRACT": "maybe"},
    )
    assert bad.returncode == ExitCode.USAGE
    assert "NATLANGCHAIN_MIGRATE_AUTO_CONTRACT='maybe'" in bad.stderr
    refused = run_cli("--status", "--auto-contract", database_url=database_url)
    assert refused.returncode == ExitCode.USAGE
    assert "--auto-contract does not go with" in refused.stderr


@pytest.mark.anyio
async def test_without_auto_contract_a_start_up_never_reads_the_contract_tables(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new)
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=new)
    assert report.up_to_date
    assert not [e for e in events if e["event"].startswith("contract")]
    assert await fetchval(database_url, "SELECT to_regclass('schema_contracts')") is None
    assert await fetchval(database_url, "SELECT to_regclass('schema_replicas')") is None


# --- status, check, rollback, drift -------------------------------------------------


def test_status_lists_contract_parts_and_check_ignores_pending_ones(
    database_url: str, tmp_path: Path, old_replica: object
) -> None:
    _, new = _folders(tmp_path)
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    status = run_cli("--status", "--migrations-dir", str(new), database_url=database_url)
    assert "○ 002_display_name.contract: WAITING (replicas of an older release" in status.stdout
    as_json = run_cli("--status", "--json", "--migrations-dir", str(new), database_url=database_url)
    objects = json.loads(as_json.stdout)
    (part,) = [o for o in objects if o.get("contract")]
    assert (part["version"], part["state"]) == (2, "WAITING")
    assert [r["label"] for r in part["waiting_for"]] == ["old-pod"]
    assert [o["version"] for o in objects if not o.get("contract")] == [1, 2]
    # --check is the new release's readiness probe: a contract part waiting is expected.
    assert (
        run_cli("--check", "--migrations-dir", str(new), database_url=database_url).returncode == 0
    )


@pytest.mark.anyio
async def test_rollback_undoes_the_contract_part_first_then_the_expand_part(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new, auto_contract=True)
    await execute(database_url, "INSERT INTO users VALUES (1, 'Ada')")
    planned = await rollback(database_url, migrations_dir=new, dry_run=True)
    assert [(u.version, u.name) for u in planned] == [
        (2, "002_display_name.contract.down"),
        (2, "002_display_name"),
    ]
    assert await _contract_rows(database_url) != []
    with capture_logs() as events:
        undone = await rollback(database_url, migrations_dir=new)
    assert [u.name for u in undone] == ["002_display_name.contract.down", "002_display_name"]
    assert [
        e["event"] for e in events if e["event"] in ("contract_rolled_back", "rollback_done")
    ] == [
        "contract_rolled_back",
        "rollback_done",
    ]
    assert await _columns(database_url) == {"id", "fullname"}
    assert await fetchval(database_url, "SELECT fullname FROM users") == "Ada"
    assert await _contract_rows(database_url) == []


def test_rollback_of_a_contract_part_without_its_undo_file_is_refused_whole(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    (new / "002_display_name.contract.down.sql").unlink()
    assert (
        run_cli(
            "--auto-contract", "--migrations-dir", str(new), database_url=database_url
        ).returncode
        == 0
    )
    done = run_cli("--rollback", "--migrations-dir", str(new), database_url=database_url)
    assert done.returncode == ExitCode.USAGE
    (failure,) = [e for e in log_events(done.stderr) if e["event"] == "run_failed"]
    assert "002_display_name.contract.down.sql" in failure["error"]
    assert "nothing was undone" in failure["error"]
    assert asyncio.run(_columns(database_url)) == {"id", "display_name"}
    assert len(asyncio.run(_contract_rows(database_url))) == 1


@pytest.mark.anyio
async def test_an_applied_contract_file_that_changed_is_drift_until_restored_or_repaired(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new, auto_contract=True)
    edited = new / "002_display_name.contract.sql"
    edited.write_text(CONTRACT_2 + "\n-- and something else", "utf-8")
    with pytest.raises(DriftError, match="contract part 002 was applied with a different checksum"):
        await contract(database_url, migrations_dir=new)
    with pytest.raises(DriftError, match=r"002_display_name\.contract\.sql"):
        await migrate(database_url, migrations_dir=new, auto_contract=True)
    cli = run_cli("contract", "--migrations-dir", str(new), database_url=database_url)
    assert cli.returncode == ExitCode.DRIFT
    status = run_cli("--status", "--migrations-dir", str(new), database_url=database_url)
    assert "✗ 002_display_name.contract: CHANGED" in status.stdout
    assert await repair(database_url, migrations_dir=new) == [2]
    (row,) = await _contract_rows(database_url)
    assert row["checksum"] == checksum(edited.read_text("utf-8"))
    assert (await contract(database_url, migrations_dir=new)).applied == []


def test_a_contract_part_marked_no_transaction_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    (new / "002_display_name.contract.sql").write_text(
        "-- natlangchain: no-transaction\n" + CONTRACT_2, "utf-8"
    )
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    done = run_cli("contract", "--migrations-dir", str(new), database_url=database_url)
    assert done.returncode == ExitCode.USAGE
    assert "002_display_name.contract.sql: a contract part runs in one transaction" in done.stderr


@pytest.mark.anyio
async def test_repair_forgets_the_row_of_a_contract_part_whose_file_is_gone(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new, auto_contract=True)
    (new / "002_display_name.contract.sql").unlink()
    (new / "002_display_name.contract.down.sql").unlink()
    with pytest.raises(DriftError, match=r"contract part 002 \(002_display_name\.contract\) is"):
        await contract(database_url, migrations_dir=new)
    assert await repair(database_url, migrations_dir=new) == [2]
    assert await _contract_rows(database_url) == []
    assert await _columns(database_url) == {"id", "display_name"}  # what it dropped stays so


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("contract", "--replica-max-age", "soon"), {}, "--replica-max-age 'soon'"),
        (("contract",), {"NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE": "1 min"}, "REPLICA_MAX_AGE"),
        (("--replica-max-age", "-5"), {}, "--replica-max-age '-5'"),
        (("--status",), {"NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE": "x"}, "REPLICA_MAX_AGE 'x'"),
    ],
)
def test_a_bad_replica_max_age_is_a_usage_error_naming_the_setting(
    args: tuple[str, ...], env: dict[str, str], named: str, database_url: str
) -> None:
    done = run_cli(*args, database_url=database_url, env=env)
    assert done.returncode == ExitCode.USAGE
    assert named in done.stderr


def test_contract_without_contract_parts_has_nothing_to_do(database_url: str) -> None:
    done = run_cli("contract", database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert "Nothing to contract" in done.stdout


async def _queries_of_a_start_up(url: str, folder: Path, *, auto: bool) -> list[str]:
    """The statements one start-up sends, through a pool whose connections log them."""
    sent: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query))

    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=log_queries)
    try:
        report = await migrate(pool=pool, migrations_dir=folder, auto_contract=auto)
    finally:
        await pool.close()
    assert report.up_to_date
    return [query for query in sent if "pg_advisory_unlock_all" not in query]


@pytest.mark.anyio
async def test_the_up_to_date_start_up_costs_one_query_and_two_more_with_auto_contract(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new, auto_contract=True)
    plain = await _queries_of_a_start_up(database_url, new, auto=False)
    assert len(plain) == 1, plain
    auto = await _queries_of_a_start_up(database_url, new, auto=True)
    assert len(auto) == 3, "\n".join(auto)
    assert not [query for query in auto if "advisory" in query]
    # migrations.sum's fast path: the same counts.
    assert run_cli("sum", "--migrations-dir", str(new), database_url=None).returncode == 0
    assert len(await _queries_of_a_start_up(database_url, new, auto=False)) == 1
    assert len(await _queries_of_a_start_up(database_url, new, auto=True)) == 3


@pytest.mark.anyio
async def test_contract_parts_run_in_transaction_lock_mode_too(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    await migrate(database_url, migrations_dir=new, lock_mode="transaction")
    report = await contract(database_url, migrations_dir=new, lock_mode="transaction")
    assert [result.version for result in report.applied] == [2]
    assert await _columns(database_url) == {"id", "display_name"}
    assert len(await _contract_rows(database_url)) == 1
    assert await migration_locks_held(database_url) == 0


def test_contract_takes_the_migrations_lock_of_the_namespace_given(
    database_url: str, tmp_path: Path
) -> None:
    from natlangchain_migrate.locks import lock_key

    _, new = _folders(tmp_path)
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0

    async def hold_and_run() -> subprocess.CompletedProcess[str]:
        holder = await asyncpg.connect(database_url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", lock_key("tenant-7"))
            return await asyncio.to_thread(
                run_cli,
                "contract",
                "--lock-timeout",
                "0.5",
                "--migrations-dir",
                str(new),
                database_url=database_url,
                env={"NATLANGCHAIN_MIGRATE_LOCK_NAMESPACE": "tenant-7"},
            )
        finally:
            await holder.close()

    done = asyncio.run(hold_and_run())
    assert done.returncode == ExitCode.LOCK_TIMEOUT, done.stderr
    assert asyncio.run(_columns(database_url)) == {"id", "fullname", "display_name"}


@pytest.mark.anyio
async def test_a_failing_contract_part_fails_an_auto_contract_start_up(
    database_url: str, tmp_path: Path
) -> None:
    _, new = _folders(tmp_path)
    (new / "002_display_name.contract.sql").write_text("ALTER TABLE nosuch DROP COLUMN x;", "utf-8")
    with pytest.raises(MigrationFailedError, match=r"002_display_name\.contract\.sql"):
        await migrate(database_url, migrations_dir=new, auto_contract=True)
    assert await _contract_rows(database_url) == []
    assert await migration_locks_held(database_url) == 0


def test_status_shows_each_state_of_a_contract_part(database_url: str, tmp_path: Path) -> None:
    _, new = _folders(tmp_path)

    def status() -> str:
        done = run_cli("--status", "--migrations-dir", str(new), database_url=database_url)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "○ 002_display_name.contract: EXPAND_PENDING (its expand part is not" in status()
    assert run_cli("--migrations-dir", str(new), database_url=database_url).returncode == 0
    assert "○ 002_display_name.contract: PENDING\n" in status()
    assert (
        run_cli("contract", "--migrations-dir", str(new), database_url=database_url).returncode == 0
    )
    assert "✓ 002_display_name.contract: APPLIED\n" in status()
    (new / "002_display_name.contract.sql").unlink()
    (new / "002_display_name.contract.down.sql").unlink()
    assert "✗ 002_display_name.contract: MISSING (file gone" in status()
