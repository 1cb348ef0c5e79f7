"""A backfill's waits and stops: it pauses while sessions wait for locks on its table or
standbys lag, a batch over target + 100 ms is halved, and SIGTERM lets the batch in
flight commit before the run stops."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import pytest
import structlog.testing

from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from natlangchain_migrate.api import migrate
from natlangchain_migrate.backfill import MAX_BATCH, Backfill, _bound, _limits, next_size
from natlangchain_migrate.errors import ConfigurationError, ExitCode
from natlangchain_migrate.throttle import Limits, Throttle
from tests.backfills import ROWS, TABLE, backfill_folder, changed_once, rows_done, start_run
from tests.conftest import fetchval, ledger_rows, log_events, run_cli, write_migrations

SLOW_FILL = (  # each batch sleeps once (an initplan), so one is surely in flight
    "-- natlangchain: backfill table=big key=id batch=4000\n"
    "UPDATE big SET touched = touched + 1, v = v * 2 WHERE id BETWEEN :lo AND :hi "
    "AND (SELECT pg_sleep({sleep})) IS NOT NULL;\n"
)


async def _events_until(events: list[Any], name: str, *, seconds: float = 60) -> dict[str, Any]:
    for _ in range(int(seconds / 0.05)):
        found = [e for e in events if e["event"] == name]
        if found:
            first: dict[str, Any] = found[0]
            return first
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name} event in {seconds}s")


async def _touched(url: str) -> int:
    return int(await fetchval(url, "SELECT count(*) FROM big WHERE touched > 0"))


# --- sizing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "elapsed", "expected"),
    [
        (1000, 0.010, 2000),  # far under the target: at most doubling
        (1000, 0.090, 1777),  # under half of it, towards 80%: 1.78x
        (1000, 0.110, 1250),  # over half the target: at most 1.25x
        (1000, 0.155, 1032),  # near 80%: about the same
        (1000, 0.250, 640),  # over the target: shrinks towards 80%
        (1000, 5.000, 500),  # far over: at most halving
        (1, 9.000, 1),  # never under one row
        (90_000, 0.001, MAX_BATCH),  # never over the cap
    ],
)
def test_auto_batches_aim_under_the_target_and_grow_slowly_near_it(
    size: int, elapsed: float, expected: int
) -> None:
    assert next_size(size, elapsed, 0.2) == expected


@pytest.mark.parametrize(
    ("settings", "limits"),
    [
        ({}, Limits(max_lag_s=10.0, max_lock_waits=0, max_wait_s=600.0)),
        ({"max-lag": "off", "max-lock-waits": "off", "max-wait": "off"}, Limits(None, None)),
        ({"max-lag": "1500ms", "max-lock-waits": "3", "max-wait": "30s"}, Limits(1.5, 3, 30.0)),
    ],
)
def test_limits_default_to_10s_of_lag_no_waiting_session_and_10min_of_waiting(
    settings: dict[str, str], limits: Limits
) -> None:
    assert _limits(settings, "002_fill.sql") == limits


@pytest.mark.parametrize(
    ("batch", "size", "run_timeout", "bound"),
    [
        (None, 1000, None, 0.3),  # batch=auto: target + 100 ms
        (None, 1000, 60.0, 0.3),  # a longer run's statement_timeout
        (None, 1000, 0.25, None),  # a shorter one applies alone
        (None, 1, None, None),  # one row: the run's settings alone
        (500, 500, None, None),  # batch=N: no bound
    ],
)
def test_an_auto_batch_is_bounded_at_target_plus_100ms(
    batch: int | None, size: int, run_timeout: float | None, bound: float | None
) -> None:
    spec = Backfill('"big"', '"id"', 0.2, 0.0, batch, Limits(10.0, 0))
    assert _bound(spec, size, run_timeout) == (None if bound is None else pytest.approx(bound))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("max-lag=soon", "max-lag=soon; write a duration such as 10s, or off"),
        ("max-lock-waits=-1", "max-lock-waits=-1; write a number"),
        ("max-lock-waits=some", "max-lock-waits=some; write a number"),
        ("max-wait=forever", "max-wait=forever; write a duration such as 10min, or off"),
    ],
)
async def test_bad_limits_are_refused_before_anything_runs(
    database_url: str, tmp_path: Path, settings: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"002_fill.sql .*{message}"):
        await migrate(database_url, migrations_dir=backfill_folder(tmp_path, settings))
    assert await fetchval(database_url, "SELECT to_regclass('big') IS NULL")


@pytest.mark.anyio
async def test_a_batch_over_target_plus_100ms_is_rolled_back_and_halved(
    database_url: str, tmp_path: Path
) -> None:
    """Batches that reach id 5000 sleep 0.4 s: over the 150 ms bound they are cancelled
    and halved, down to one row, which runs unbounded; every row still changes once."""
    slow = (
        "-- natlangchain: backfill table=big key=id target=50ms\n"
        "UPDATE big SET touched = touched + 1, v = v * 2 WHERE id BETWEEN :lo AND :hi "
        "AND (SELECT pg_sleep(CASE WHEN 5000 BETWEEN :lo AND :hi THEN 0.4 ELSE 0 END)) "
        "IS NOT NULL;\n"
    )
    folder = write_migrations(tmp_path / "m", {"001_big.sql": TABLE, "002_fill.sql": slow})
    with structlog.testing.capture_logs() as events:
        await migrate(database_url, migrations_dir=folder)
    over = [e for e in events if e["event"] == "backfill_batch_over_target"]
    assert over, "no batch went over the bound"
    assert all(e["bound_ms"] == 150 for e in over)
    assert [e["next_batch_size"] for e in over] == [e["batch_size"] // 2 for e in over]
    assert over[-1]["next_batch_size"] == 1
    assert await changed_once(database_url)
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]


def test_a_wait_reads_as_one_plain_line_in_a_terminal() -> None:
    from natlangchain_migrate.logs import _ConsoleLines

    event = {"event": "backfill_throttled", "name": "002_fill", "version": 2}
    event |= {"file": "002_fill.up.sql", "reason": "lock_waits", "value": 3, "limit": 0}
    line = _ConsoleLines(colors=False)(None, "info", event | {"waited_s": 1.5})
    assert line == "  ... 002_fill.up.sql waits: lock_waits 3, over 0"


# --- lock waits --------------------------------------------------------------------------


class _Waiting(NamedTuple):
    holder: asyncpg.Connection
    waiter: asyncpg.Connection
    waiting: asyncio.Future[str]

    async def release(self) -> None:
        await self.holder.execute("COMMIT")
        await self.waiting
        await self.holder.close()
        await self.waiter.close()


async def _hold_and_wait(url: str, kind: str) -> _Waiting:
    """A session holding a lock on ``big`` and another waiting for it: a row (the waiter
    holds the row's tuple lock) or the table (a lock not granted on the relation)."""
    holder, waiter = await asyncpg.connect(url), await asyncpg.connect(url)
    if kind == "row":
        await holder.execute("BEGIN; UPDATE big SET v = v WHERE id = 19999")
    else:
        await holder.execute("BEGIN; LOCK TABLE big IN SHARE MODE")
    waiting = asyncio.ensure_future(waiter.execute("UPDATE big SET v = v WHERE id = 19999"))
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    for _ in range(500):
        if await fetchval(url, query):
            break
        await asyncio.sleep(0.02)
    return _Waiting(holder, waiter, waiting)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["row", "table"])
async def test_a_backfill_waits_while_a_session_waits_for_a_lock_on_its_table(
    database_url: str, tmp_path: Path, kind: str
) -> None:
    folder = backfill_folder(tmp_path, "batch=1000")
    await migrate(database_url, migrations_dir=folder, target=1)
    held = await _hold_and_wait(database_url, kind)
    try:
        with structlog.testing.capture_logs() as events:
            run = asyncio.ensure_future(
                migrate(database_url, migrations_dir=folder, progress_interval=0.2)
            )
            throttled = await _events_until(events, "backfill_throttled")
            assert (throttled["reason"], throttled["value"], throttled["limit"]) == (
                "lock_waits",
                1,
                0,
            )
            await asyncio.sleep(0.6)
            assert await _touched(database_url) == 0, "a batch ran while a session waited"
            waits = [e["waited_s"] for e in events if e["event"] == "backfill_throttled"]
            assert len(waits) >= 2
            assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(waits))
            await held.release()
            await asyncio.wait_for(run, 120)
    finally:
        if not held.holder.is_closed():
            await held.release()
    assert await changed_once(database_url)
    assert [row["version"] for row in await ledger_rows(database_url)] == [1, 2]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("limits", "over"),
    [
        (Limits(max_lag_s=None, max_lock_waits=0), True),
        (Limits(max_lag_s=None, max_lock_waits=1), False),
        (Limits(max_lag_s=None, max_lock_waits=None), False),
        (Limits(max_lag_s=0.0, max_lock_waits=None), False),  # no standby: no lag
    ],
)
async def test_one_waiting_session_is_over_a_limit_of_0_only(
    database_url: str, tmp_path: Path, limits: Limits, over: bool
) -> None:
    await migrate(database_url, migrations_dir=backfill_folder(tmp_path, ""), target=1)
    held = await _hold_and_wait(database_url, "row")
    conn = await asyncpg.connect(database_url)
    try:
        oid = await conn.fetchval("SELECT 'big'::regclass::oid")
        throttle = Throttle(conn, limits, table_oid=oid, report_interval=1, fields={})
        assert (await throttle.over() is not None) is over
    finally:
        await held.release()
        await conn.close()


def test_a_backfill_gives_up_after_max_wait_and_a_rerun_resumes(
    database_url: str, tmp_path: Path
) -> None:
    """It waited for ever while a session kept waiting for a lock on its table, holding
    the migration lock (and the deploy) with it. Now, after max-wait, it stops with one
    line naming the reading, its value and its limit (exit 17), the batches done kept."""
    fill = SLOW_FILL.format(sleep=0.1).replace("batch=4000", "batch=500 max-wait=1s")
    folder = write_migrations(tmp_path / "m", {"001_big.sql": TABLE, "002_fill.sql": fill})
    asyncio.run(migrate(database_url, migrations_dir=folder, target=1))
    loop = asyncio.new_event_loop()  # the two sessions' own, kept across the run
    run = start_run(folder, database_url)
    try:
        for _ in range(600):  # a batch or more done, then a session waits on the table
            if asyncio.run(rows_done(database_url)) > 0:
                break
            time.sleep(0.02)
        held = loop.run_until_complete(_hold_and_wait(database_url, "row"))
        try:
            _, stderr = run.communicate(timeout=120)  # before: waited until killed here
            kept = asyncio.run(rows_done(database_url))
            ledger = [row["version"] for row in asyncio.run(ledger_rows(database_url))]
        finally:
            loop.run_until_complete(held.release())
    finally:
        loop.close()
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == ExitCode.CONFLICT, stderr
    [failed] = [e for e in log_events(stderr) if e["event"] == "run_failed"]
    error = failed["error"]
    assert "\n" not in error
    assert error.startswith("002_fill.sql: the backfill gave up waiting before its next batch")
    assert '(max-wait=1s): sessions waiting for a lock on "big" were 1, over ' in error
    assert "max-lock-waits=0; the " in error
    assert 0 < kept < ROWS
    assert f"the {kept} rows done stay committed with its position" in error, error
    assert ledger == [1]
    rerun = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert rerun.returncode == ExitCode.OK, rerun.stderr
    assert asyncio.run(changed_once(database_url))  # resumed at its position: no row twice
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1, 2]


# --- replication lag -------------------------------------------------------------------


@pytest.fixture
def standby(pg_cluster: PgCluster | None) -> Iterator[PgCluster]:
    if pg_cluster is None:
        pytest.skip("needs the suite's own server to copy with pg_basebackup")
    replica = PgCluster(embedded_bindir(), name="lagging", parent=memory_backed_dir())
    replica.init_replica_of(pg_cluster).start()
    try:
        yield replica
    finally:
        replica.destroy()


@pytest.fixture
async def wal_writer(database_url: str) -> AsyncIterator[None]:
    """WAL every 50 ms, so that the standby reports its (paused) replay position."""
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE tick (at timestamptz)")

    async def tick() -> None:
        while True:
            await conn.execute("INSERT INTO tick VALUES (now())")
            await asyncio.sleep(0.05)

    task = asyncio.ensure_future(tick())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await conn.close()


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.anyio
async def test_a_backfill_waits_while_a_standby_lags_and_goes_on_when_it_catches_up(
    database_url: str, tmp_path: Path, standby: PgCluster, wal_writer: None
) -> None:
    """A real streaming standby whose replay is paused: replay_lag grows past max-lag=1s,
    the backfill waits; replay resumes, lag falls, the backfill finishes."""
    folder = backfill_folder(tmp_path, "batch=2000 max-lag=1s max-lock-waits=off")
    await migrate(database_url, migrations_dir=folder, target=1)
    replica = await asyncpg.connect(standby.dsn())
    try:
        await replica.execute("SELECT pg_wal_replay_pause()")
        lag = "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication"
        for _ in range(300):
            if await fetchval(database_url, lag) > 1.5:
                break
            await asyncio.sleep(0.05)
        with structlog.testing.capture_logs() as events:
            run = asyncio.ensure_future(
                migrate(database_url, migrations_dir=folder, progress_interval=0.2)
            )
            throttled = await _events_until(events, "backfill_throttled")
            assert throttled["reason"] == "replication_lag"
            assert throttled["value"] > 1
            assert throttled["limit"] == 1
            await asyncio.sleep(0.5)
            assert await _touched(database_url) == 0, "a batch ran while the standby lagged"
            await replica.execute("SELECT pg_wal_replay_resume()")
            await asyncio.wait_for(run, 120)
        # A role that may not read pg_stat_replication's lag is told so, once.
        blind = f"lag_blind_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f"CREATE ROLE {blind}; SET ROLE {blind}")
            throttle = Throttle(
                conn,
                Limits(max_lag_s=1.0, max_lock_waits=None),
                table_oid=await conn.fetchval("SELECT 'big'::regclass::oid"),
                report_interval=1,
                fields={},
            )
            with structlog.testing.capture_logs() as hidden:
                assert await throttle.over() is None
                assert await throttle.over() is None
            assert [e["event"] for e in hidden] == ["backfill_lag_hidden"]
            assert "pg_monitor" in hidden[0]["advice"]
        finally:
            await conn.execute(f"RESET ROLE; DROP ROLE {blind}")
            await conn.close()
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        await replica.close()
    assert await changed_once(database_url)


# --- SIGTERM -----------------------------------------------------------------------------


async def _batch_in_flight(url: str) -> None:
    """Until the runner's session sleeps inside a batch's UPDATE."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
    for _ in range(600):
        if await fetchval(url, query):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no batch in flight within 12 s")


@pytest.mark.system
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("signals", "commits", "exit_code"),
    [
        ((signal.SIGTERM,), True, 143),
        ((signal.SIGTERM, signal.SIGTERM), False, 143),
        ((signal.SIGTERM, signal.SIGINT), False, 143),
        ((signal.SIGINT,), False, 130),
    ],
    ids=["TERM", "TERM-TERM", "TERM-INT", "INT"],
)
async def test_sigterm_lets_the_batch_in_flight_commit_then_stops(
    database_url: str,
    tmp_path: Path,
    signals: tuple[signal.Signals, ...],
    commits: bool,
    exit_code: int,
) -> None:
    """SIGTERM mid-batch: the batch commits with its position, exit 143, and the next run
    resumes after it (every row once). SIGINT, or a second signal, cancels the batch."""
    folder = write_migrations(
        tmp_path / "m", {"001_big.sql": TABLE, "002_fill.sql": SLOW_FILL.format(sleep=1.0)}
    )
    await migrate(database_url, migrations_dir=folder, target=1)
    process = start_run(folder, database_url)
    await _batch_in_flight(database_url)  # the first batch
    for _ in range(300):  # ... and then a later one, so some work committed before it
        if await rows_done(database_url) >= 4000:
            break
        await asyncio.sleep(0.02)
    await _batch_in_flight(database_url)
    before = await rows_done(database_url)
    for number, each in enumerate(signals):
        if number:
            await asyncio.sleep(0.3)
        process.send_signal(each)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == exit_code
    after = await rows_done(database_url)
    assert after == (before + 4000 if commits else before)
    assert await _touched(database_url) == after, "rows changed beyond the recorded position"
    interrupted = log_events(stderr)[-1]
    assert interrupted["event"] == "run_interrupted"
    assert ("batch in flight committed" in interrupted["error"]) is commits
    rerun = start_run(folder, database_url)
    _, stderr = await asyncio.to_thread(rerun.communicate, timeout=120)
    assert rerun.returncode == 0, stderr
    assert await changed_once(database_url)
    assert await _touched(database_url) == ROWS


def _read_until(process: subprocess.Popen[str], event: str) -> list[str]:
    """The CLI's stderr lines up to and including the first ``event``."""
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line)
        if f'"event": "{event}"' in line or f'"event":"{event}"' in line:
            return lines
    raise AssertionError(f"the CLI ended without {event}: {''.join(lines)[-2000:]}")


@pytest.mark.system
@pytest.mark.anyio
@pytest.mark.parametrize("between", ["pause", "wait"])
async def test_sigterm_between_batches_stops_at_once(
    database_url: str, tmp_path: Path, between: str
) -> None:
    """In a pause or a wait there is no batch to finish: the run stops, 143, and the
    next run resumes after the last batch."""
    fill = FILL_SETTINGS[between]
    folder = write_migrations(tmp_path / "m", {"001_big.sql": TABLE, "002_fill.sql": fill})
    await migrate(database_url, migrations_dir=folder, target=1)
    held = await _hold_and_wait(database_url, "row") if between == "wait" else None
    try:
        process = start_run(folder, database_url)
        if held is not None:
            await asyncio.to_thread(_read_until, process, "backfill_throttled")
        else:
            for _ in range(600):
                if await rows_done(database_url) >= 4000:
                    break
                await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if held is not None:
            await held.release()
    assert process.returncode == 143
    expected = 4000 if between == "pause" else 0
    assert await rows_done(database_url) == await _touched(database_url) == expected
    assert "batch in flight committed" not in log_events(stderr)[-1]["error"]
    (folder / "002_fill.sql").write_text(FILL_SETTINGS["wait"])  # not applied: no pause now
    rerun = start_run(folder, database_url)
    _, stderr = await asyncio.to_thread(rerun.communicate, timeout=120)
    assert rerun.returncode == 0, stderr
    assert await changed_once(database_url)


FILL_SETTINGS = {
    "pause": (
        "-- natlangchain: backfill table=big key=id batch=4000 pause=30s\n"
        "UPDATE big SET touched = touched + 1, v = v * 2 WHERE id BETWEEN :lo AND :hi;\n"
    ),
    "wait": (
        "-- natlangchain: backfill table=big key=id batch=4000\n"
        "UPDATE big SET touched = touched + 1, v = v * 2 WHERE id BETWEEN :lo AND :hi;\n"
    ),
}


# --- errors ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("statement", "location"),
    [
        (
            "UPDATE big SET v = v\nWHERE id BETWEEN :lo AND :hi\n  AND nosuch = 1;\n",
            "002_fill.sql:4:7",
        ),
        ("UPDATE big SET nosuch = 1\nWHERE id BETWEEN :lo AND :hi;\n", "002_fill.sql:2:16"),
        ("UPDATE big SET v = v WHERE id BETWEEN :lo AND nosuch + :hi;\n", "002_fill.sql:2:47"),
    ],
    ids=["after-the-bounds", "before-them", "between-them"],
)
async def test_an_error_in_a_batch_names_its_file_line_and_column(
    database_url: str, tmp_path: Path, statement: str, location: str
) -> None:
    """A batch goes as one message with its bounds written in; the error's position is
    mapped back to the file, and nothing of the batch stays."""
    from natlangchain_migrate.errors import MigrationFailedError

    fill = "-- natlangchain: backfill table=big key=id\n" + statement
    folder = write_migrations(tmp_path / "m", {"001_big.sql": TABLE, "002_fill.sql": fill})
    with pytest.raises(MigrationFailedError) as failed:
        await migrate(database_url, migrations_dir=folder)
    assert location in str(failed.value)
    assert await rows_done(database_url) == 0
    assert [row["version"] for row in await ledger_rows(database_url)] == [1]


@pytest.mark.anyio
async def test_rows_done_counts_the_rows_covered_not_only_those_changed(
    database_url: str, tmp_path: Path
) -> None:
    fill = (
        "-- natlangchain: backfill table=big key=id batch=3000\n"
        "UPDATE big SET touched = 1 WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;\n"
    )
    folder = write_migrations(tmp_path / "m", {"001_big.sql": TABLE, "002_fill.sql": fill})
    with structlog.testing.capture_logs() as events:
        await migrate(database_url, migrations_dir=folder, progress_interval=0.001)
    done = [e["rows_done"] for e in events if e["event"] == "backfill_progress"]
    assert done[:3] == [3000, 6000, 9000]
    assert done[-1] == ROWS
    assert await _touched(database_url) == ROWS // 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key_type", "key"),
    [
        ("text", "E'k\\\\''' || g || E'\\\\\\\\'"),  # a quote and a backslash in every key
        ("uuid", "md5(g::text)::uuid"),
        ("timestamptz", "'2026-01-01 00:00:00.123456+00'::timestamptz + g * interval '1 s'"),
        ("numeric", "g / 7.0"),
    ],
)
async def test_any_orderable_key_type_is_written_into_the_batch_exactly(
    database_url: str, tmp_path: Path, key_type: str, key: str
) -> None:
    """The bounds go into the message as literals of the key's type: every row once."""
    table = (
        f"CREATE TABLE keyed (k {key_type} PRIMARY KEY, touched int NOT NULL DEFAULT 0);\n"
        f"INSERT INTO keyed (k) SELECT {key} FROM generate_series(1, 5000) g;\n"
    )
    fill = (
        "-- natlangchain: backfill table=keyed key=k batch=700\n"
        "UPDATE keyed SET touched = touched + 1 WHERE k BETWEEN :lo AND :hi;\n"
    )
    folder = write_migrations(tmp_path / "m", {"001_t.sql": table, "002_fill.sql": fill})
    await migrate(database_url, migrations_dir=folder)
    assert await fetchval(database_url, "SELECT count(*) FROM keyed WHERE touched = 1") == 5000
    if key_type == "text":
        both = "SELECT bool_and(strpos(k, chr(39)) > 0 AND strpos(k, chr(92)) > 0) FROM keyed"
        assert await fetchval(database_url, both)
