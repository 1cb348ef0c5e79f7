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
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import DriftError, migrate, repair, run_migrations, status
from natlangchain_migrate.discovery import checksum
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.errors import ExitCode, FutureMigrationsError
from natlangchain_migrate.locks import default_namespace, lock_key
from natlangchain_migrate.manifest import write_manifest
from natlangchain_migrate.plan import State
from tests.conftest import (
    fetchval,
    ledger_rows,
    log_events,
    migration_locks_held,
    run_cli,
    start_cli,
    table_names,
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
    return start_cli("--migrations-dir", str(folder), database_url=url)


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


# --- repeatables a newer release changed ----------------------------------------------


def _view(value: int) -> dict[str, str]:
    return {"R__v.sql": f"CREATE OR REPLACE VIEW v AS SELECT {value} AS one;\n"}


def _view_value(url: str) -> int:
    value: int = asyncio.run(fetchval(url, "SELECT one FROM v"))
    return value


@pytest.fixture
def view_releases(database_url: str, tmp_path: Path) -> tuple[Path, Path]:
    """The old release (001-003, view v = 1) migrated, then the new one (001-004, v = 2)."""
    old = _release(tmp_path / "old", 3, _view(1))
    new = _release(tmp_path / "new", 4, _view(2))
    for folder in (old, new):
        assert _cli(folder, database_url).returncode == 0
    assert _view_value(database_url) == 2
    return old, new


def test_an_old_release_leaves_a_repeatable_a_newer_one_changed(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    """The probe passes, a restart applies nothing and warns once, the view stays new."""
    old, _ = view_releases
    probe = _cli(old, database_url, "--check")
    assert probe.returncode == 0, probe.stdout
    assert probe.stdout.strip() == (
        "up to date: 3 of 3 applied, 1 of 1 repeatable current, 1 future (004), "
        "1 future repeatable (R__v)"
    )
    summary = json.loads(_cli(old, database_url, "--check", "--json").stdout)
    assert (summary["exit_code"], summary["pending_repeatables"]) == (0, [])
    assert (summary["future"], summary["future_repeatables"]) == ([4], ["R__v"])
    restart = _cli(old, database_url)
    assert restart.returncode == 0, restart.stderr
    warnings = _events(restart, "future_migrations")
    assert [(e["versions"], e["repeatables"]) for e in warnings] == [([4], ["R__v"])]
    assert "repeatable R__v as of release 004" in warnings[0]["note"]
    assert _events(restart, "migration_applied") == []
    dry = _cli(old, database_url, "--dry-run")
    assert (dry.returncode, _events(dry, "migration_applied")) == (0, [])
    assert "Nothing to apply" in dry.stdout
    status_text = _cli(old, database_url, "--status").stdout
    assert "↑ R__v: FUTURE (applied by a newer release, 004; left as it is)" in status_text
    objects = json.loads(_cli(old, database_url, "--status", "--json").stdout)
    assert (objects[-1]["name"], objects[-1]["state"]) == ("R__v", "FUTURE")
    _no_repair_advice(probe.stdout, restart.stdout, restart.stderr, status_text)
    assert _view_value(database_url) == 2
    assert asyncio.run(migration_locks_held(database_url)) == 0


@pytest.mark.anyio
async def test_the_library_leaves_it_too_and_plans_it_as_future(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    old, _ = view_releases
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=old)
    assert (report.applied, report.future, report.future_repeatables) == ([], [4], ["R__v"])
    assert [e.get("repeatables") for e in events if e["event"] == "future_migrations"] == [["R__v"]]
    plan = await status(database_url, migrations_dir=old)
    assert [(e.name, e.state) for e in plan.future_repeatables] == [("R__v", State.FUTURE)]
    assert plan.pending == []


def test_the_new_release_again_does_not_reapply_it(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    old, new = view_releases
    assert _cli(old, database_url).returncode == 0
    again = _cli(new, database_url)
    assert again.returncode == 0, again.stderr
    assert _events(again, "migration_applied") == []
    assert _events(again, "future_migrations") == []
    assert _cli(new, database_url, "--check").returncode == 0
    assert _view_value(database_url) == 2


def test_a_rollout_undone_keeps_the_newer_repeatable_until_the_operator_hands_it_back(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    """New gone for good: the old release runs on with the new view; ``--repair`` from
    the old release hands the repeatable back and its next run applies the old file;
    the new release, deployed again, applies its own again."""
    old, new = view_releases
    for _ in range(2):
        assert _cli(old, database_url).returncode == 0
    assert _view_value(database_url) == 2
    repaired = _cli(old, database_url, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    handed = _events(repaired, "future_repeatable_handed_back")
    assert [(e["name"], e["release"]) for e in handed] == [("R__v", 4)]
    assert [e["versions"] for e in _events(repaired, "future_rows_kept")] == [[4]]
    assert _versions(database_url) == [1, 2, 3, 4]
    assert _cli(old, database_url, "--check").returncode == ExitCode.CHECK_PENDING
    back = _cli(old, database_url)
    assert back.returncode == 0, back.stderr
    assert [e["name"] for e in _events(back, "migration_applied")] == ["R__v"]
    assert _view_value(database_url) == 1
    assert _cli(old, database_url, "--check").returncode == 0
    returned = _cli(new, database_url)
    assert [e["name"] for e in _events(returned, "migration_applied")] == ["R__v"]
    assert _view_value(database_url) == 2


def test_a_repair_from_the_old_release_keeps_a_repeatable_only_the_newer_one_ships(
    database_url: str, tmp_path: Path
) -> None:
    old = _release(tmp_path / "old", 3)
    new = _release(tmp_path / "new", 4, _view(2))
    for folder in (new, old):
        assert _cli(folder, database_url).returncode == 0
    status_text = _cli(old, database_url, "--status").stdout
    assert "↑ R__v: FUTURE (applied by a newer release, 004; left as it is)" in status_text
    repaired = _cli(old, database_url, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert _events(repaired, "missing_row_removed") == []
    assert _events(repaired, "future_repeatable_handed_back") == []
    again = _cli(new, database_url)
    assert _events(again, "migration_applied") == []


def test_the_same_release_changing_its_file_reapplies_it_as_before(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    old, new = view_releases
    (new / "R__v.sql").write_text("CREATE OR REPLACE VIEW v AS SELECT 3 AS one;\n")
    result = _cli(new, database_url)
    assert [e["name"] for e in _events(result, "migration_applied")] == ["R__v"]
    assert _view_value(database_url) == 3
    newer = _release(old.parent / "newer", 5, _view(4))
    assert [e["name"] for e in _events(_cli(newer, database_url), "migration_applied")] == [
        "005_t5",
        "R__v",
    ]
    assert _view_value(database_url) == 4


def test_rows_without_a_release_and_a_ledger_without_the_column_behave_as_before(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    """A row written before the column existed (NULL) is re-applied on a checksum change,
    by any release; a table made before the column gets it under the lock."""
    old, _ = view_releases
    asyncio.run(sql_execute(database_url, "UPDATE schema_repeatables SET release = NULL"))
    assert _cli(old, database_url, "--check").returncode == ExitCode.CHECK_PENDING
    assert _view_value(database_url) == 2
    asyncio.run(sql_execute(database_url, "ALTER TABLE schema_repeatables DROP COLUMN release"))
    assert _cli(old, database_url, "--check").returncode == ExitCode.CHECK_PENDING
    result = _cli(old, database_url)
    assert result.returncode == 0, result.stderr
    assert [e["columns_added"] for e in _events(result, "ledger_adopted")] == [["release"]]
    assert [e["name"] for e in _events(result, "migration_applied")] == ["R__v"]
    assert _view_value(database_url) == 1
    release = asyncio.run(fetchval(database_url, "SELECT release FROM schema_repeatables"))
    assert release == 3


def test_an_older_package_still_reads_and_writes_the_table(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    """The statements a release of this package before the column sends still work."""
    asyncio.run(
        sql_execute(
            database_url,
            "SELECT ARRAY(SELECT r.name || ' ' || r.checksum FROM schema_repeatables r); "
            "INSERT INTO schema_repeatables (name, checksum, applied_at, execution_ms, "
            "applied_by) VALUES ('R__v', 'x', clock_timestamp(), 1, 'old') ON CONFLICT (name) "
            "DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = EXCLUDED.applied_at, "
            "execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by",
        )
    )
    assert asyncio.run(fetchval(database_url, "SELECT checksum FROM schema_repeatables")) == "x"


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--refuse-future",), {}), ((), {"NATLANGCHAIN_MIGRATE_REFUSE_FUTURE": "1"})],
    ids=["flag", "variable"],
)
def test_refuse_future_names_the_newer_release_s_repeatable(
    database_url: str,
    view_releases: tuple[Path, Path],
    args: tuple[str, ...],
    env: dict[str, str],
) -> None:
    old, _ = view_releases
    result = _cli(old, database_url, *args, env=env)
    assert result.returncode == ExitCode.DRIFT, result.stderr
    failed = _events(result, "run_failed")[0]
    assert failed["error_type"] == "FutureMigrationsError"
    assert "repeatable R__v as of release 004" in failed["error"]
    _no_repair_advice(result.stdout, result.stderr)
    assert _view_value(database_url) == 2
    assert _cli(old, database_url, "--check", env=env).returncode == 0


async def _queries_of_a_start_up(url: str, folder: Path) -> list[str]:
    """The statements one start-up sends, through a pool whose connection logs them."""
    sent: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query))

    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=log_queries)
    try:
        report = await migrate(pool=pool, migrations_dir=folder)
    finally:
        await pool.close()
    assert report.up_to_date
    return [query for query in sent if "pg_advisory_unlock_all" not in query]


@pytest.mark.anyio
async def test_the_start_up_with_a_newer_release_s_repeatable_is_one_query_and_no_lock(
    database_url: str, view_releases: tuple[Path, Path]
) -> None:
    """Old and new release alike; also on a table from before the release column."""
    for folder in view_releases:
        queries = await _queries_of_a_start_up(database_url, folder)
        assert len(queries) == 1, queries
        assert "advisory" not in queries[0]
    await sql_execute(database_url, "ALTER TABLE schema_repeatables DROP COLUMN release")
    assert len(await _queries_of_a_start_up(database_url, view_releases[1])) == 1
    await sql_execute(database_url, "UPDATE schema_repeatables SET checksum = 'x'")
    await migrate(database_url, migrations_dir=view_releases[1])  # adds the column back
    assert len(await _queries_of_a_start_up(database_url, view_releases[0])) == 1
