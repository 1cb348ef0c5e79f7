"""SIGTERM and SIGINT: the running statement is cancelled on the server, rolled back, the
lock released, one closing event, a documented exit code; also as a container's PID 1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.servers.sql import fetchval as sql_fetchval
from natlangchain_migrate.errors import ExitCode
from tests.conftest import log_events, migration_locks_held, write_migrations

pytestmark = pytest.mark.system  # README: "Running the tests"

NO_TX = "-- natlangchain: no-transaction\n"
SLEEPING = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()"
)
EXIT_CODES = {signal.SIGTERM: ExitCode.TERMINATED, signal.SIGINT: ExitCode.INTERRUPTED}


def _value(url: str, sql: str) -> object:
    return asyncio.run(sql_fetchval(url, sql))


def _start(folder: Path, url: str, *, as_pid_1: bool = False) -> subprocess.Popen[str]:
    env = os.environ | {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)]
    if as_pid_1:
        command = ["unshare", "--pid", "--fork", "--kill-child", "--", *command]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_until_sleeping(url: str, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    query = SLEEPING
    while time.monotonic() < deadline:
        if _value(url, query):
            return
        assert runner.poll() is None, runner.communicate()
        time.sleep(0.05)
    pytest.fail("the migration never started its sleep")


def _stop(runner: subprocess.Popen[str], signum: signal.Signals) -> tuple[float, str]:
    sent = time.monotonic()
    if isinstance(runner.args, list) and runner.args[0] == "unshare":
        # Signal the CLI itself, PID 1 of its namespace (unshare's child).
        child = subprocess.run(
            ["pgrep", "-P", str(runner.pid)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        os.kill(int(child), signum)
    else:
        runner.send_signal(signum)
    _, stderr = runner.communicate(timeout=30)
    return time.monotonic() - sent, stderr


CASES = [
    ("transactional", {"001_t.sql": "CREATE TABLE t (id int);\nSELECT pg_sleep(60);\n"}),
    (
        "no-transaction",
        {"001_t.sql": NO_TX + "CREATE TABLE t (id int);\nSELECT pg_sleep(60);\nSELECT 1;\n"},
    ),
]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize(("kind", "files"), CASES, ids=[kind for kind, _ in CASES])
def test_a_signal_cancels_the_statement_rolls_back_and_releases_the_lock(
    database_url: str, tmp_path: Path, signum: signal.Signals, kind: str, files: dict[str, str]
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    runner = _start(folder, database_url)
    _wait_until_sleeping(database_url, runner)
    took, stderr = _stop(runner, signum)
    assert runner.returncode == EXIT_CODES[signum], stderr
    assert took < 5, f"took {took:.1f}s to stop"
    events = log_events(stderr)
    assert [e["event"] for e in events][-1] == "run_interrupted"
    assert "Traceback" not in stderr
    assert not [e for e in events if e["event"] == "lock_release_failed"]
    assert asyncio.run(migration_locks_held(database_url)) == 0
    assert _value(database_url, SLEEPING) == 0
    if kind == "transactional":  # rolled back whole: nothing of the file, no row
        assert _value(database_url, "SELECT to_regclass('t')") is None
        assert _value(database_url, "SELECT count(*) FROM schema_migrations") == 0
    else:  # statement 1 committed with its journal step; the sleep did not
        row = "SELECT statements_done FROM schema_migrations WHERE NOT complete"
        assert _value(database_url, row) == 1


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_sigterm_stops_the_cli_running_as_pid_1(database_url: str, tmp_path: Path) -> None:
    """The kernel ignores a signal sent to PID 1 that has no handler: docker stop and
    Kubernetes would wait out the grace period and SIGKILL."""
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode().strip()}")
    folder = write_migrations(tmp_path / "m", dict(CASES[:1][0][1]))
    runner = _start(folder, database_url, as_pid_1=True)
    _wait_until_sleeping(database_url, runner)
    took, stderr = _stop(runner, signal.SIGTERM)
    assert runner.returncode == ExitCode.TERMINATED, stderr
    assert took < 5
    assert asyncio.run(migration_locks_held(database_url)) == 0


def test_a_waiter_stopped_while_waiting_for_the_lock_leaves_at_once(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", dict(CASES[0][1]))
    holder = _start(folder, database_url)
    _wait_until_sleeping(database_url, holder)
    waiter = _start(folder, database_url)
    time.sleep(1.0)
    took, stderr = _stop(waiter, signal.SIGTERM)
    assert waiter.returncode == ExitCode.TERMINATED, stderr
    assert took < 5
    assert holder.poll() is None, "the holder must be unaffected"
    _stop(holder, signal.SIGTERM)
    assert asyncio.run(migration_locks_held(database_url)) == 0


def _wait_until_handling_sigterm(pid: int) -> None:
    """Until the process catches SIGTERM (Linux: SigCgt in /proc/PID/status): before
    that, the interpreter itself is still starting and no program can answer."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(
            next(line for line in status.splitlines() if line.startswith("SigCgt:"))[7:], 16
        )
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.002)
    pytest.fail("the CLI never installed its SIGTERM handler")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.06, 0.15])
def test_sigterm_during_start_up_exits_143_too(
    database_url: str, tmp_path: Path, delay: float
) -> None:
    """From the moment our code runs (imports, connecting, before the run has begun)
    there is nothing to clean up, but the exit code must still be the documented one,
    never death by signal."""
    folder = write_migrations(tmp_path / "m", dict(CASES[0][1]))
    runner = _start(folder, database_url)
    _wait_until_handling_sigterm(runner.pid)
    time.sleep(delay)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=30)
    assert runner.returncode == ExitCode.TERMINATED, stderr
    assert "Traceback" not in stderr
    assert asyncio.run(migration_locks_held(database_url)) == 0


def test_the_handlers_from_before_the_run_are_back_after_it() -> None:
    """A SIGTERM between the run's end and the process's exit must meet the entry point's
    handler (exit 143), not the default that asyncio leaves (death by signal, exit -15)."""
    from natlangchain_migrate.signals import stop_on_signals

    def before(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    old = signal.signal(signal.SIGTERM, before)
    try:

        async def work() -> int:
            return 7

        assert asyncio.run(stop_on_signals(work())) == 7
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, old)


# A COPY data section the server takes slowly (a trigger sleeps for each row), bigger than
# the socket's buffer and the read-ahead, so a signal lands mid-stream.
SLOW_COPY_HEAD = """CREATE TABLE seed (id bigint PRIMARY KEY, body text);
CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.0005); RETURN NEW; END $$;
CREATE TRIGGER slow_row BEFORE INSERT ON seed FOR EACH ROW EXECUTE FUNCTION slow_row();
COPY public.seed (id, body) FROM stdin;
"""
COPYING = "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_during_copy_rows_rolls_back_and_releases_the_lock(
    database_url: str, tmp_path: Path, signum: signal.Signals
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    with (folder / "001_seed.sql").open("w", encoding="utf-8") as file:
        file.write(SLOW_COPY_HEAD)
        pad = "x" * 200
        file.writelines(f"{n}\t{pad}\n" for n in range(100_000))  # about 21 MB
        file.write("\\.\n")
    runner = _start(folder, database_url)
    deadline = time.monotonic() + 30
    while (_value(database_url, COPYING) or 0) < 500:  # type: ignore[operator]
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline, "the COPY never started"
        time.sleep(0.05)
    took, stderr = _stop(runner, signum)
    assert runner.returncode == EXIT_CODES[signum], stderr
    assert took < 5, f"took {took:.1f}s to stop"
    events = log_events(stderr)
    assert [e["event"] for e in events][-1] == "run_interrupted"
    assert "Traceback" not in stderr
    assert asyncio.run(migration_locks_held(database_url)) == 0
    assert _value(database_url, COPYING) == 0
    assert _value(database_url, "SELECT to_regclass('seed')") is None
    assert _value(database_url, "SELECT count(*) FROM schema_migrations") == 0
