"""A fleet of tenant schemas (and databases) migrated in one run: each target exactly once
under its own lock, the no-op path in one query per database, the canary and
--max-failures stopping the rollout, a rerun after kill -9 converging, sharding."""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from harness.servers.sql import execute, fetch, fetchval
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.fleet_api import FleetKeywords, fleet_of, migrate_fleet
from natlangchain_migrate.fleet_report import Outcome
from natlangchain_migrate.fleet_targets import Shard
from tests.conftest import log_events, run_cli, start_cli, write_migrations

FILES = {
    "001_items.sql": "CREATE TABLE items (id int PRIMARY KEY);",
    "002_note.sql": "ALTER TABLE items ADD COLUMN note text;",
    # Fails in any schema named like '%bad%': the failing tenant of a fleet.
    "003_check.sql": (
        "CREATE TABLE checks (id int);\n"
        "DO $$ BEGIN IF current_schema() LIKE '%bad%' THEN "
        "RAISE EXCEPTION 'tenant % refuses 003', current_schema(); END IF; END $$;"
    ),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_migrations(tmp_path / "migrations", FILES)


def test_migrate_fleet_takes_exactly_fleet_ofs_keywords() -> None:
    keywords = list(inspect.signature(fleet_of).parameters)
    assert keywords[0] == "dsn"
    assert list(FleetKeywords.__annotations__) == keywords[1:]


async def _make_schemas(url: str, names: list[str]) -> None:
    await execute(url, "".join(f'CREATE SCHEMA "{name}";' for name in names))


async def _ledger_counts(url: str, names: list[str]) -> dict[str, list[int]]:
    """Each schema's ledger versions (empty when it has no ledger)."""
    conn = await asyncpg.connect(url)
    try:
        found = {}
        for name in names:
            exists = await conn.fetchval("SELECT to_regclass($1)", f'"{name}".schema_migrations')
            rows = (
                await conn.fetch(f'SELECT version FROM "{name}".schema_migrations ORDER BY 1')
                if exists
                else []
            )
            found[name] = [row["version"] for row in rows]
        return found
    finally:
        await conn.close()


async def _advisory_locks(url: str) -> int:
    # This database's only: the suite's template session holds one of its own elsewhere.
    found = await fetchval(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    assert isinstance(found, int)
    return found


def _tenants(count: int, prefix: str = "tenant_") -> list[str]:
    return [f"{prefix}{number:04d}" for number in range(count)]


@pytest.mark.anyio
async def test_two_hundred_fresh_tenants_each_migrated_once_no_lock_left(
    database_url: str, folder: Path
) -> None:
    """200 fresh schemas: every one at 003, one row per version, no advisory lock left."""
    names = _tenants(200)
    await _make_schemas(database_url, names)
    report = await migrate_fleet(database_url, each_schema="tenant\\_%", migrations_dir=folder)
    assert report.exit_code == 0, report.failed[:3]
    assert [r.id for r in report.results] == names
    assert {r.outcome for r in report.results} == {Outcome.APPLIED}
    assert all(r.applied == (1, 2, 3) and r.version_after == 3 for r in report.results)
    ledgers = await _ledger_counts(database_url, names)
    assert all(versions == [1, 2, 3] for versions in ledgers.values())
    assert await _advisory_locks(database_url) == 0


async def _counts_once_idle(url: str) -> asyncpg.Record:
    """pg_stat_database's sessions and transactions of ``url``'s database once no session
    is left in it: a session adds its counts as its backend exits, which under load (xdist,
    other work) comes well after the client closed it."""
    database = url.rsplit("/", 1)[1]
    admin = with_database(url, "postgres")
    left = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"
    for _ in range(1200):  # a minute at most
        if not await fetchval(admin, left):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the last one's counts, flushed as it leaves
    stats = (
        "SELECT pg_stat_force_next_flush(), sessions, xact_commit + xact_rollback AS xacts "
        f"FROM pg_stat_database WHERE datname = '{database}'"
    )
    return (await fetch(admin, stats))[0]


@pytest.mark.anyio
async def test_a_no_op_over_the_fleet_costs_one_connection_and_two_queries(
    database_url: str, folder: Path
) -> None:
    """Counted by the server (pg_stat_database): one session, two transactions.

    Other backends add to the same counters (autovacuum's workers, a session of the first
    run whose counts arrive late), never subtract, so the fewest seen over a few windows is
    the fleet's own cost: a fleet that spent more could not show these numbers in any."""
    names = _tenants(50)
    await _make_schemas(database_url, names)
    await migrate_fleet(database_url, each_schema="tenant\\_%", migrations_dir=folder)
    costs = []
    for _ in range(5):
        before = await _counts_once_idle(database_url)
        report = await migrate_fleet(database_url, each_schema="tenant\\_%", migrations_dir=folder)
        after = await _counts_once_idle(database_url)
        assert report.count(Outcome.UP_TO_DATE) == 50, report.results[0]
        assert report.connections == 1
        costs.append((after["sessions"] - before["sessions"], after["xacts"] - before["xacts"]))
        if costs[-1] == (1, 3):
            break
    # The session's start counts one transaction; then the catalog query and the one over
    # every ledger.
    assert min(sessions for sessions, _ in costs) == 1, costs
    assert min(xacts for _, xacts in costs) == 3, costs


def _fleet_cli(
    url: str, folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("fleet", "--migrations-dir", str(folder), *args, database_url=url, env=env)


def _start_fleet_cli(
    url: str, folder: Path, *args: str, output: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """The fleet CLI started (see ``start_cli``)."""
    return start_cli(
        "fleet", "--migrations-dir", str(folder), *args, database_url=url, output=output
    )


@pytest.mark.anyio
async def test_a_failing_canary_stops_the_rollout_and_leaves_every_other_tenant_untouched(
    database_url: str, folder: Path
) -> None:
    names = ["tenant_0000_bad", *_tenants(10)[1:]]
    await _make_schemas(database_url, names)
    report = await migrate_fleet(
        database_url, each_schema="tenant\\_%", migrations_dir=folder, canary=1
    )
    assert report.exit_code == 27
    assert report.stopped is not None
    bad = report.results[0]
    assert bad.outcome is Outcome.FAILED
    assert bad.canary
    assert "refuses 003" in (bad.error or "")
    assert bad.applied == (1, 2)
    assert bad.version_after == 2
    assert {r.outcome for r in report.results[1:]} == {Outcome.NOT_STARTED}
    ledgers = await _ledger_counts(database_url, names)
    assert ledgers == {"tenant_0000_bad": [1, 2], **{name: [] for name in names[1:]}}
    # The failing migration rolled back whole: its table is not there.
    assert await fetchval(database_url, "SELECT to_regclass('tenant_0000_bad.checks')") is None


@pytest.mark.anyio
async def test_max_failures_stops_starting_tenants_after_that_many_failures(
    database_url: str, folder: Path
) -> None:
    names = [f"tenant_000{n}_bad" for n in range(3)] + _tenants(8)[3:]
    await _make_schemas(database_url, names)
    report = await migrate_fleet(
        database_url, each_schema="tenant\\_%", migrations_dir=folder, concurrency=1, max_failures=2
    )
    outcomes = [r.outcome for r in report.results]
    assert outcomes == [Outcome.FAILED] * 2 + [Outcome.NOT_STARTED] * 6
    assert report.exit_code == 27
    assert "--max-failures 2" in (report.stopped or "")


def test_a_failing_tenant_is_reported_the_others_migrate_and_a_rerun_touches_only_it(
    database_url: str, folder: Path
) -> None:
    names = [*_tenants(6), "tenant_0003_bad"]
    asyncio.run(_make_schemas(database_url, names))
    first = _fleet_cli(database_url, folder, "--each-schema", "tenant\\_%", "--json")
    assert first.returncode == 26, first.stderr[-2000:]
    report = json.loads(first.stdout)
    by_id = {target["id"]: target for target in report["targets"]}
    assert by_id["tenant_0003_bad"]["outcome"] == "failed"
    assert "003_check.sql" in by_id["tenant_0003_bad"]["error"]
    assert by_id["tenant_0003_bad"]["exit_code"] == 1
    assert all(by_id[name]["outcome"] == "applied" for name in _tenants(6))
    assert by_id["tenant_0000"]["version_before"] is None
    assert by_id["tenant_0000"]["version_after"] == 3
    assert by_id["tenant_0000"]["applied"] == [1, 2, 3]
    failed_events = [e for e in log_events(first.stderr) if e["event"] == "fleet_target_failed"]
    assert [event["target"] for event in failed_events] == ["tenant_0003_bad"]
    events = [event["event"] for event in log_events(first.stderr)]
    assert events.count("fleet_target_done") == 7  # one per target that ran
    assert "migration_applied" not in events  # a target's own info events stay quiet

    rerun = _fleet_cli(database_url, folder, "--each-schema", "tenant\\_%")
    assert rerun.returncode == 26
    progress = [line for line in rerun.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 1
    assert "tenant_0003_bad: FAILED" in progress[0]
    assert "6 up_to_date" in rerun.stdout
    assert "1 failed" in rerun.stdout

    check = _fleet_cli(database_url, folder, "--each-schema", "tenant\\_%", "--check")
    assert check.returncode == 10, check.stdout
    assert check.stdout.splitlines()[0] == "tenant_0003_bad: pending: 2 of 3 applied (1 to apply)"
    status = _fleet_cli(database_url, folder, "--each-schema", "tenant\\_%", "--status")
    assert status.returncode == 10
    assert len(status.stdout.splitlines()) == 8


def _fleet_part_done(
    database_url: str, tmp_path: Path, *, tenants: int, done: int
) -> tuple[subprocess.Popen[str], list[str], Path]:
    """The fleet CLI running over ``tenants`` schemas (a slow 002 each), returned once
    ``done`` of them have every version: the runner, the schemas and the folder."""
    slow = {**FILES, "002_note.sql": "SELECT pg_sleep(0.05); ALTER TABLE items ADD note text;"}
    folder = write_migrations(tmp_path / "slow", slow)
    names = _tenants(tenants)
    asyncio.run(_make_schemas(database_url, names))
    runner = _start_fleet_cli(
        database_url, folder, "--each-schema", "tenant\\_%", output=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts = asyncio.run(_ledger_counts(database_url, names))
        if sum(versions == [1, 2, 3] for versions in counts.values()) >= done:
            break
        time.sleep(0.05)
    return runner, names, folder


def test_kill_9_mid_fleet_then_a_rerun_converges(database_url: str, tmp_path: Path) -> None:
    """The killed run's tenants are at 0, 1, 2 or 3 versions; the rerun finishes each."""
    runner, names, folder = _fleet_part_done(database_url, tmp_path, tenants=80, done=10)
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    done = asyncio.run(_ledger_counts(database_url, names))
    assert sum(versions == [1, 2, 3] for versions in done.values()) < len(names)
    rerun = _fleet_cli(database_url, folder, "--each-schema", "tenant\\_%", "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert all(v == [1, 2, 3] for v in asyncio.run(_ledger_counts(database_url, names)).values())
    assert asyncio.run(_advisory_locks(database_url)) == 0


def test_two_fleet_runs_at_once_apply_each_migration_once(database_url: str, folder: Path) -> None:
    """A second apply of 001 would fail (the table exists): both exit 0, so each ran once."""
    names = _tenants(60)
    asyncio.run(_make_schemas(database_url, names))
    runs = [_start_fleet_cli(database_url, folder, "--each-schema", "tenant\\_%") for _ in "ab"]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    assert all(v == [1, 2, 3] for v in asyncio.run(_ledger_counts(database_url, names)).values())
    assert asyncio.run(_advisory_locks(database_url)) == 0


def _three_databases(admin_url: str) -> list[str]:
    names = [f"fleet_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for name in names:
        asyncio.run(execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        asyncio.run(_make_schemas(with_database(admin_url, name), ["tenant_a", "tenant_b"]))
    return names


def _drop(admin_url: str, names: list[str]) -> None:
    for name in names:
        asyncio.run(execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_targets_across_three_databases_with_the_password_from_the_environment(
    admin_url: str, folder: Path, tmp_path: Path
) -> None:
    names = _three_databases(admin_url)
    try:
        parts = urlsplit(admin_url)
        password = parts.password or ""
        hidden = admin_url.replace(f":{password}@", ":${FLEET_TEST_PASSWORD}@")
        listing = "# the fleet\n" + "".join(f"{with_database(hidden, n)}\n\n" for n in names)
        targets = tmp_path / "targets.txt"
        targets.write_text(listing, encoding="utf-8")
        env = {"FLEET_TEST_PASSWORD": password}
        args = ("--targets", str(targets), "--each-schema", "tenant%", "--json")
        run = _fleet_cli("", folder, *args, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        report = json.loads(run.stdout)
        assert report["databases"] == 3
        assert report["counts"]["applied"] == 6
        assert all(t["id"].endswith(("/tenant_a", "/tenant_b")) for t in report["targets"])
        again = json.loads(_fleet_cli("", folder, *args, env=env).stdout)
        assert again["counts"]["up_to_date"] == 6
        assert again["connections"] == 3
        for name in names:
            ledgers = asyncio.run(
                _ledger_counts(with_database(admin_url, name), ["tenant_a", "tenant_b"])
            )
            assert ledgers == {"tenant_a": [1, 2, 3], "tenant_b": [1, 2, 3]}
    finally:
        _drop(admin_url, names)


def test_a_literal_password_in_the_targets_file_is_refused_naming_file_and_line(
    tmp_path: Path, folder: Path
) -> None:
    targets = tmp_path / "targets.txt"
    secret = "s3cret-Pa55"
    targets.write_text(
        f"postgresql://app@db1/app\npostgresql://app:{secret}@db2/app\n", encoding="utf-8"
    )
    run = _fleet_cli("", folder, "--targets", str(targets))
    assert run.returncode == 2
    assert f"{targets}:2: a password is written in the targets file" in run.stderr
    assert secret not in run.stderr + run.stdout


@pytest.mark.anyio
async def test_shards_cover_every_tenant_exactly_once(database_url: str, folder: Path) -> None:
    names = _tenants(40)
    await _make_schemas(database_url, names)
    seen: list[str] = []
    for position in range(4):
        report = await migrate_fleet(
            database_url,
            each_schema="tenant\\_%",
            migrations_dir=folder,
            shard=Shard(position, 4),
        )
        assert report.exit_code == 0
        assert all(r.outcome is Outcome.APPLIED for r in report.results)
        seen += [r.id for r in report.results]
    assert sorted(seen) == names
    assert all(v == [1, 2, 3] for v in (await _ledger_counts(database_url, names)).values())


def test_a_bad_shard_is_refused_in_one_line(database_url: str, folder: Path) -> None:
    run = _fleet_cli(database_url, folder, "--each-schema", "t%", "--shard", "4/4")
    assert run.returncode == 2
    assert "--shard '4/4': expected I/N with 0 <= I < N" in run.stderr


@pytest.mark.anyio
async def test_create_tenant_makes_a_fully_migrated_schema_and_refuses_an_existing_one(
    database_url: str, folder: Path
) -> None:
    from natlangchain_migrate import ConfigurationError, create_tenant

    report = await create_tenant(database_url, schema="tenant_new", migrations_dir=folder)
    assert [r.version for r in report.applied] == [1, 2, 3]
    assert (await _ledger_counts(database_url, ["tenant_new"]))["tenant_new"] == [1, 2, 3]
    with pytest.raises(ConfigurationError, match="'tenant_new' already exists"):
        await create_tenant(database_url, schema="tenant_new", migrations_dir=folder)


@pytest.mark.anyio
async def test_create_tenant_database_copies_the_template_and_applies_what_it_lacks(
    admin_url: str, tmp_path: Path
) -> None:
    from natlangchain_migrate import create_tenant_database, migrate

    first_two = write_migrations(tmp_path / "old", dict(list(FILES.items())[:2]))
    folder = write_migrations(tmp_path / "new", FILES)
    template, tenant = (f"fleet_{uuid.uuid4().hex[:10]}" for _ in "ab")
    await execute(admin_url, f'CREATE DATABASE "{template}" TEMPLATE template0')
    try:
        await migrate(with_database(admin_url, template), migrations_dir=first_two)
        report = await create_tenant_database(
            admin_url, database=tenant, template=template, migrations_dir=folder
        )
        assert report.already_applied == [1, 2]
        assert [r.version for r in report.applied] == [3]
        rows = await fetch(
            with_database(admin_url, tenant), "SELECT version FROM schema_migrations"
        )
        assert sorted(row["version"] for row in rows) == [1, 2, 3]
    finally:
        for name in (template, tenant):
            await execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.anyio
async def test_schemas_from_query_migrates_the_schemas_it_returns_creating_new_ones(
    database_url: str, folder: Path
) -> None:
    await execute(
        database_url,
        "CREATE SCHEMA acme; CREATE SCHEMA skipped; CREATE TABLE public.tenants (name text);"
        "INSERT INTO public.tenants VALUES ('acme'), ('globex'), ('acme');",
    )
    report = await migrate_fleet(
        database_url,
        schemas_from_query="SELECT name FROM public.tenants;",
        migrations_dir=folder,
    )
    assert [(r.id, r.outcome) for r in report.results] == [
        ("acme", Outcome.APPLIED),
        ("globex", Outcome.APPLIED),
    ]
    ledgers = await _ledger_counts(database_url, ["acme", "globex", "skipped"])
    assert ledgers == {"acme": [1, 2, 3], "globex": [1, 2, 3], "skipped": []}


def test_flags_that_cannot_go_together_are_refused(database_url: str, folder: Path) -> None:
    both = _fleet_cli(database_url, folder, "--each-schema", "t%", "--schemas-from-query", "x")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    negative = _fleet_cli(database_url, folder, "--each-schema", "t%", "--canary", "-1")
    assert negative.returncode == 2
    assert "--canary -1: give 0 or more" in negative.stderr


def test_sigterm_mid_fleet_rolls_back_exits_143_and_a_rerun_converges(
    database_url: str, tmp_path: Path
) -> None:
    runner, names, folder = _fleet_part_done(database_url, tmp_path, tenants=60, done=5)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 143
    assert asyncio.run(_advisory_locks(database_url)) == 0
    rerun = _fleet_cli(database_url, folder, "--each-schema", "tenant\\_%")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert all(v == [1, 2, 3] for v in asyncio.run(_ledger_counts(database_url, names)).values())


def test_each_tenant_has_its_own_lock_key() -> None:
    """The default lock namespace names the schema: tenants never wait for each other."""
    from natlangchain_migrate.locks import default_namespace, lock_key

    keys = {lock_key(default_namespace(name)) for name in _tenants(1000)}
    assert len(keys) == 1000


@pytest.mark.anyio
async def test_an_unreachable_database_is_one_failed_target_and_the_others_migrate(
    admin_url: str, database_url: str, folder: Path
) -> None:
    await _make_schemas(database_url, ["tenant_a"])
    missing = with_database(admin_url, f"gone_{uuid.uuid4().hex[:8]}")
    report = await migrate_fleet(
        targets=[database_url, missing], each_schema="tenant%", migrations_dir=folder
    )
    assert report.exit_code == 26
    (failed,) = report.failed
    assert failed.exit_code == 7
    assert failed.id.endswith(missing.rsplit("/", 1)[1])
    password = urlsplit(admin_url).password
    assert password is None or password not in (failed.error or "")
    (applied,) = [r for r in report.results if r.outcome is Outcome.APPLIED]
    assert applied.id.endswith("/tenant_a")
    assert applied.version_after == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "postgresql://app:${FLEET_UNSET}@db/app\n",
            ":1: ${FLEET_UNSET} is not set",
        ),
        (
            "postgresql://app@db/a\n# c\npostgresql://app@db/a\n",
            ":3: db:5432/a is already listed on line 1",
        ),
        ("# nothing\n\n", ": no DSN in it (one per line)"),
        ("host=db dbname=app password=hunter22\n", ":1: a password is written in the targets file"),
        ("postgresql://app@db/app?password=hunter22\n", ":1: a password is written"),
    ],
)
def test_a_bad_targets_file_is_refused_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each mistake in a targets file is one ConfigurationError naming file and line, and
    never the password."""
    from natlangchain_migrate.errors import ConfigurationError
    from natlangchain_migrate.fleet_targets import read_targets_file

    path = tmp_path / "targets.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        read_targets_file(path)
    assert f"{path}{message}" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_a_fleet_database_is_named_by_host_port_and_database() -> None:
    from natlangchain_migrate.fleet_targets import database_of

    database = database_of("host=db1 port=6432 dbname=tenant_7 user=app")
    assert (database.label, database.server) == ("db1:6432/tenant_7", "db1:6432")
