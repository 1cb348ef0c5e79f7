"""Two releases at once: a database migrated by a newer release is not drift for an older one.

Folder ``new`` holds 001-004 and ``old`` 001-003. Rows above the newest local file are
FUTURE: an old replica warns once (``future_migrations``), applies nothing for them and goes
on; ``--check`` counts the database as current; ``--repair`` and ``--rollback`` never forget
them; ``refuse_future`` turns them into an error for CI. A missing file below the newest
local one is still drift.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from harness.sql import execute as sql_execute
from natlangchain_migrate import DriftError, migrate, repair, run_migrations, status
from natlangchain_migrate.discovery import checksum
from natlangchain_migrate.errors import ExitCode, FutureMigrationsError
from natlangchain_migrate.locks import default_namespace, lock_key
from natlangchain_migrate.manifest import write_manifest
from natlangchain_migrate.plan import State
from tests.conftest import (
    ledger_rows,
    log_events,
    migration_locks_held,
    run_cli,
    table_names,
    with_database,
    write_migrations,
)


def _release(folder: Path, newest: int, extra: dict[str, str] | None = None) -> Path:
    """Versions 1 to ``newest``, each ``CREATE TABLE tN (id int primary key);``."""
    files = {
        f"{n:03d}_t{n}.sql": f"CREATE TABLE t{n} (id int primary key);\n"
        for n in range(1, newest + 1)
    }
    return write_migrations(folder, files | (extra or {}))


@pytest.fixture
def new(tmp_path: Path) -> Path:
    return _release(tmp_path / "new", 4)


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return _release(tmp_path / "old", 3)


@pytest.fixture
def ahead(database_url: str, new: Path) -> str:
    """A database the new release (001-004) migrated."""
    result = _cli(new, database_url)
    assert result.returncode == 0, result.stderr
    return database_url


def _cli(
    folder: Path, url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("--migrations-dir", str(folder), *args, database_url=url, env=env)


def _events(result: subprocess.CompletedProcess[str], name: str) -> list[dict[str, Any]]:
    return [event for event in log_events(result.stderr) if event["event"] == name]


def _versions(url: str) -> list[int]:
    return [row["version"] for row in asyncio.run(ledger_rows(url))]


def _no_repair_advice(*texts: str) -> None:
    """No output of the old release suggests forgetting a row the new one wrote."""
    for text in texts:
        assert "repair" not in text.lower(), text


# --- an old replica restarting after the new one migrated ----------------------------


def test_an_old_replica_restarting_after_the_new_one_migrated_exits_0_and_warns_once(
    ahead: str, old: Path
) -> None:
    result = _cli(old, ahead)
    assert result.returncode == 0, result.stderr
    warnings = _events(result, "future_migrations")
    assert len(warnings) == 1
    assert warnings[0]["versions"] == [4]
    assert warnings[0]["level"] == "warning"
    assert "newer release" in warnings[0]["note"]
    assert _events(result, "migration_applied") == []
    assert _events(result, "run_failed") == []
    _no_repair_advice(result.stdout, result.stderr)
    assert _versions(ahead) == [1, 2, 3, 4]
    assert asyncio.run(migration_locks_held(ahead)) == 0


def test_an_old_release_with_a_checksum_manifest_leaves_its_fast_path_and_warns(
    ahead: str, old: Path
) -> None:
    """The shipped migrations carry migrations.sum: the ledger's digest then differs from
    the manifest's, the run reads the files, and the database is ahead, not drifted."""
    write_manifest(old)
    result = _cli(old, ahead)
    assert result.returncode == 0, result.stderr
    assert [e["versions"] for e in _events(result, "future_migrations")] == [[4]]
    assert _events(result, "up_to_date")


@pytest.mark.anyio
async def test_library_migrate_returns_normally_and_reports_the_future_versions(
    database_url: str, new: Path, old: Path
) -> None:
    await migrate(database_url, migrations_dir=new)
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=old)
    assert report.applied == []
    assert report.up_to_date
    assert report.already_applied == [1, 2, 3]
    assert report.future == [4]
    warnings = [e for e in events if e["event"] == "future_migrations"]
    assert [(e["log_level"], e["versions"]) for e in warnings] == [("warning", [4])]
    plan = await status(database_url, migrations_dir=old)
    assert [(e.version, e.state) for e in plan.future] == [(4, State.FUTURE)]
    assert plan.missing == []
    assert plan.changed == []


def test_run_migrations_for_sync_apps_returns_normally_too(ahead: str, old: Path) -> None:
    report = run_migrations(ahead, migrations_dir=old)
    assert report.future == [4]
    assert report.applied == []


def test_a_repeatable_does_not_count_as_the_newest_version(
    database_url: str, tmp_path: Path
) -> None:
    view = {"R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT 1 AS one;\n"}
    new = _release(tmp_path / "new", 4, view)
    old = _release(tmp_path / "old", 3, view)
    assert _cli(new, database_url).returncode == 0
    result = _cli(old, database_url)
    assert result.returncode == 0, result.stderr
    assert [e["versions"] for e in _events(result, "future_migrations")] == [[4]]
    assert _events(result, "migration_applied") == []
    check = _cli(old, database_url, "--check", "--json")
    assert check.returncode == 0, check.stdout
    summary = json.loads(check.stdout)
    assert (summary["future"], summary["pending_repeatables"]) == ([4], [])
    status_objects = json.loads(_cli(old, database_url, "--status", "--json").stdout)
    assert [(o["version"], o["state"]) for o in status_objects] == [
        (1, "APPLIED"),
        (2, "APPLIED"),
        (3, "APPLIED"),
        (4, "FUTURE"),
        (None, "APPLIED"),
    ]


# --- old and new starting together ----------------------------------------------------


def _start(folder: Path, url: str) -> subprocess.Popen[str]:
    env = dict(os.environ) | {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_old_and_new_started_together_on_a_fresh_database_both_succeed(
    admin_url: str, new: Path, old: Path
) -> None:
    """Twenty races of two real processes; before FUTURE, the old one failed about half."""
    for trial in range(20):
        name = f"race_{uuid.uuid4().hex[:10]}"
        asyncio.run(sql_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        url = with_database(admin_url, name)
        try:
            runners = [_start(new, url), _start(old, url)]
            outputs = [runner.communicate(timeout=120) for runner in runners]
            codes = [runner.returncode for runner in runners]
            assert codes == [0, 0], (trial, [err for _, err in outputs])
            events = [event for _, err in outputs for event in log_events(err)]
            applied = [e["version"] for e in events if e["event"] == "migration_applied"]
            assert sorted(applied) == [1, 2, 3, 4], (trial, applied)
            assert _versions(url) == [1, 2, 3, 4]
            assert asyncio.run(table_names(url)) == {"schema_migrations", "t1", "t2", "t3", "t4"}
            assert asyncio.run(migration_locks_held(url)) == 0
            _no_repair_advice(*(err for _, err in outputs))
        finally:
            asyncio.run(sql_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.anyio
async def test_an_old_replica_waiting_for_the_lock_warns_once_when_the_new_one_finishes(
    database_url: str, new: Path, old: Path
) -> None:
    """The race's other branch, made certain: the old release plans 003, waits for the lock
    the new one holds, and finds 003 and 004 applied when it gets its turn."""
    await migrate(database_url, migrations_dir=new, target=2)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(default_namespace("public")))
        with capture_logs() as events:
            waiting = asyncio.create_task(migrate(database_url, migrations_dir=old))
            for _ in range(3000):  # until it has planned 003 and waits for the lock
                if any(e["event"] == "migration_plan" for e in events):
                    break
                await asyncio.sleep(0.01)
            assert not waiting.done()
            async with holder.transaction():  # what the new release does under the lock
                for version in (3, 4):
                    sql = (new / f"{version:03d}_t{version}.sql").read_text()
                    await holder.execute(sql)
                    await holder.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        version,
                        f"{version:03d}_t{version}",
                        checksum(sql),
                    )
            await holder.execute("SELECT pg_advisory_unlock_all()")
            report = await waiting
    finally:
        await holder.close()
    assert report.applied == []
    assert report.future == [4]
    warnings = [e for e in events if e["event"] == "future_migrations"]
    assert [e["versions"] for e in warnings] == [[4]]
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2, 3, 4]
    assert await migration_locks_held(database_url) == 0


# --- a rollout undone ------------------------------------------------------------------


def test_a_rollout_undone_keeps_the_old_release_working_and_the_new_one_can_return(
    ahead: str, new: Path, old: Path
) -> None:
    """New gone, old back (restarting, probed, repaired): nothing forgets 004, and the new
    release, deployed again, finds it applied (no 42P07 ``relation "t4" already exists``)."""
    outputs: list[str] = []
    for _ in range(2):  # the old replicas restart, again and again
        restarted = _cli(old, ahead)
        assert restarted.returncode == 0, restarted.stderr
        outputs += [restarted.stdout, restarted.stderr]
    probe = _cli(old, ahead, "--check")
    assert probe.returncode == 0, probe.stdout
    repaired = _cli(old, ahead, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert _versions(ahead) == [1, 2, 3, 4]
    again = _cli(new, ahead)
    assert again.returncode == 0, again.stderr
    assert _events(again, "migration_applied") == []
    assert _events(again, "up_to_date")
    outputs += [probe.stdout, probe.stderr]
    _no_repair_advice(*outputs)


def test_an_old_file_with_a_future_version_but_other_content_is_changed_drift(
    ahead: str, tmp_path: Path
) -> None:
    """Not a future row: this release has a file 004 of its own, so 004 is CHANGED as ever."""
    other = _release(tmp_path / "other", 3, {"004_t4.sql": "CREATE TABLE other (id int);\n"})
    result = _cli(other, ahead)
    assert result.returncode == ExitCode.DRIFT
    error = _events(result, "run_failed")[0]["error"]
    assert "migration 004 was applied with a different checksum" in error
    assert _events(result, "future_migrations") == []
    assert "004_t4: CHANGED" in _cli(other, ahead, "--status").stdout
    assert _cli(other, ahead, "--check").returncode == ExitCode.CHECK_DRIFT


# --- dry run, status, check, repair, rollback, strict order ----------------------------


def test_dry_run_of_the_old_release_has_nothing_to_apply_and_warns(ahead: str, old: Path) -> None:
    result = _cli(old, ahead, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Nothing to apply" in result.stdout
    assert [e["versions"] for e in _events(result, "future_migrations")] == [[4]]
    as_json = _cli(old, ahead, "--dry-run", "--json")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


def test_status_shows_future_rows(ahead: str, old: Path) -> None:
    result = _cli(old, ahead, "--status")
    assert result.returncode == 0
    assert "✓ 003_t3: APPLIED" in result.stdout
    assert "↑ 004_t4: FUTURE (applied by a newer release; no file here)" in result.stdout
    assert "Applied: 3 / 3, 1 future (004)" in result.stdout
    _no_repair_advice(result.stdout)
    objects = json.loads(_cli(old, ahead, "--status", "--json").stdout)
    future = objects[-1]
    assert (future["version"], future["name"], future["state"]) == (4, "004_t4", "FUTURE")
    assert future["checksum"] is None
    assert future["applied_checksum"] is not None


def test_check_counts_a_database_that_is_ahead_as_current(ahead: str, old: Path) -> None:
    """The readiness probe: exit 0 for the old release and the new one."""
    result = _cli(old, ahead, "--check")
    assert result.returncode == 0
    assert result.stdout.strip() == "up to date: 3 of 3 applied, 1 future (004)"
    as_json = _cli(old, ahead, "--check", "--json")
    assert as_json.returncode == 0
    summary = json.loads(as_json.stdout)
    assert summary["state"] == "up to date"
    assert summary["exit_code"] == 0
    assert (summary["applied"], summary["total"]) == (3, 3)
    assert (summary["future"], summary["drifted"], summary["pending"]) == ([4], [], [])
    new_side = json.loads(_cli(old.parent / "new", ahead, "--check", "--json").stdout)
    assert (new_side["exit_code"], new_side["future"]) == (0, [])


def test_repair_from_the_old_release_keeps_the_future_row_and_says_so(
    ahead: str, old: Path
) -> None:
    result = _cli(old, ahead, "--repair")
    assert result.returncode == 0, result.stderr
    kept = _events(result, "future_rows_kept")
    assert [e["versions"] for e in kept] == [[4]]
    assert "kept" in kept[0]["note"]
    assert _events(result, "missing_row_removed") == []
    assert _versions(ahead) == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_repair_in_the_library_keeps_future_rows(
    database_url: str, new: Path, old: Path
) -> None:
    await migrate(database_url, migrations_dir=new)
    with capture_logs() as events:
        repaired = await repair(database_url, migrations_dir=old)
    assert repaired == []
    assert [e["versions"] for e in events if e["event"] == "future_rows_kept"] == [[4]]
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2, 3, 4]


def test_rollback_from_the_old_release_refuses_to_forget_a_future_row(
    ahead: str, old: Path
) -> None:
    """Without 004's file the old release could only drop its row, and the new release
    would then run 004 again; so it refuses, and says to roll back with the newer release."""
    for args in (("--rollback",), ("--rollback", "--dry-run"), ("--rollback", "--to", "2")):
        result = _cli(old, ahead, *args)
        assert result.returncode == ExitCode.DRIFT, (args, result.stderr)
        error = _events(result, "run_failed")[0]["error"]
        assert "004" in error
        assert "newer release" in error
        _no_repair_advice(error)
    assert _versions(ahead) == [1, 2, 3, 4]
    assert "t4" in asyncio.run(table_names(ahead))


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--strict-order",), {}), ((), {"NATLANGCHAIN_MIGRATE_STRICT_ORDER": "1"})],
    ids=["flag", "variable"],
)
def test_strict_order_accepts_a_database_that_is_ahead(
    ahead: str, old: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = _cli(old, ahead, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert [e["versions"] for e in _events(result, "future_migrations")] == [[4]]


def test_strict_order_still_refuses_a_pending_version_below_a_future_one(
    database_url: str, new: Path, old: Path
) -> None:
    """The new release skipped 003 and applied 004: for the old one 003 is pending below
    an applied version, which strict order refuses and the default applies, out of order."""
    assert _cli(new, database_url, "--skip", "3").returncode == 0
    strict = _cli(old, database_url, "--strict-order")
    assert strict.returncode == ExitCode.OUT_OF_ORDER
    assert _versions(database_url) == [1, 2, 4]
    result = _cli(old, database_url)
    assert result.returncode == 0, result.stderr
    assert [e["versions"] for e in _events(result, "applying_out_of_order")] == [[3]]
    assert [e["versions"] for e in _events(result, "future_migrations")] == [[4]]
    assert [e["version"] for e in _events(result, "migration_applied")] == [3]
    assert _versions(database_url) == [1, 2, 3, 4]


# --- what stays drift -------------------------------------------------------------------


def test_a_missing_file_below_the_newest_local_one_is_still_drift(ahead: str, old: Path) -> None:
    (old / "002_t2.sql").unlink()
    result = _cli(old, ahead)
    assert result.returncode == ExitCode.DRIFT
    error = _events(result, "run_failed")[0]["error"]
    assert "migration 002 (002_t2) is applied but its file is gone" in error
    assert "004" not in error  # the future row is not drift, and never advised away
    status_text = _cli(old, ahead, "--status").stdout
    assert "✗ 002_t2: MISSING" in status_text
    assert "↑ 004_t4: FUTURE" in status_text
    check = _cli(old, ahead, "--check", "--json")
    assert check.returncode == ExitCode.CHECK_DRIFT
    summary = json.loads(check.stdout)
    assert (summary["drifted"], summary["future"]) == ([2], [4])
    repaired = _cli(old, ahead, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert [e["version"] for e in _events(repaired, "missing_row_removed")] == [2]
    assert [e["versions"] for e in _events(repaired, "future_rows_kept")] == [[4]]
    assert _versions(ahead) == [1, 3, 4]


# --- refusing future rows (CI) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--refuse-future",), {}),
        ((), {"NATLANGCHAIN_MIGRATE_REFUSE_FUTURE": "1"}),
        (("--refuse-future", "--dry-run"), {}),
    ],
    ids=["flag", "variable", "dry-run"],
)
def test_refuse_future_exits_5_without_suggesting_repair(
    ahead: str, old: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = _cli(old, ahead, *args, env=env)
    assert result.returncode == ExitCode.DRIFT, result.stderr
    failed = _events(result, "run_failed")[0]
    assert failed["error_type"] == "FutureMigrationsError"
    assert "004 (004_t4)" in failed["error"]
    assert "newer release" in failed["error"]
    _no_repair_advice(result.stdout, result.stderr)
    assert _versions(ahead) == [1, 2, 3, 4]


def test_refuse_future_is_off_for_a_false_variable_and_refused_when_unknown(
    ahead: str, old: Path
) -> None:
    assert _cli(old, ahead, env={"NATLANGCHAIN_MIGRATE_REFUSE_FUTURE": "0"}).returncode == 0
    bad = _cli(old, ahead, env={"NATLANGCHAIN_MIGRATE_REFUSE_FUTURE": "maybe"})
    assert bad.returncode == ExitCode.USAGE
    assert "NATLANGCHAIN_MIGRATE_REFUSE_FUTURE='maybe' is not one of" in bad.stderr
    flag_with_status = _cli(old, ahead, "--status", "--refuse-future")
    assert flag_with_status.returncode == ExitCode.USAGE
    assert "--refuse-future does not go with --status" in flag_with_status.stderr


def test_check_stays_a_readiness_probe_with_the_refusal_variable_set(ahead: str, old: Path) -> None:
    result = _cli(old, ahead, "--check", env={"NATLANGCHAIN_MIGRATE_REFUSE_FUTURE": "1"})
    assert result.returncode == 0, result.stdout


@pytest.mark.anyio
async def test_refuse_future_in_the_library_raises_a_drift_error(
    database_url: str, new: Path, old: Path
) -> None:
    await migrate(database_url, migrations_dir=new)
    with pytest.raises(FutureMigrationsError) as refused:
        await migrate(database_url, migrations_dir=old, refuse_future=True)
    assert isinstance(refused.value, DriftError)
    assert refused.value.exit_code == ExitCode.DRIFT
    assert refused.value.versions == [4]
    assert "repair" not in str(refused.value)
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2, 3, 4]
