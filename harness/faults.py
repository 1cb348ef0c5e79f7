"""The kill -9 harness: kill the CLI at a random moment of a run, run it again, check.

After each kill the plain rerun must exit 0 and leave what one clean run leaves:
the same ``pg_dump --schema-only``, every version recorded once and complete,
and no advisory lock held; and the same data (clock columns aside), which
catches a statement that a rerun repeated without an error, such as an UPDATE.
The delays are drawn uniformly over the time a clean apply takes, so the kills
land throughout the run.

    .venv/bin/python -m harness.faults --trials 50 --mode no-transaction
        [--count 300] [--seed 0] [--admin-url URL] [--migrations-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import difflib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import asyncpg

from harness.history import write_history
from harness.pgcluster import PgCluster, embedded_bindir
from harness.sql import execute as sql_execute
from harness.sql import fetch as sql_fetch
from natlangchain_migrate.dsn import with_database

MODES = ("transaction", "no-transaction")
# kill: SIGKILL (the OOM killer, a runtime's kill -9); term: SIGTERM (docker stop, a pod
# deletion), which must end the run promptly with 143; terminate-backend:
# pg_terminate_backend of the runner's sessions, which must end it with 3 (not the file's
# fault); restart: a fast restart of the server under a run started with --wait 60, which
# must finish by itself with 0.
FAULTS = ("kill", "term", "terminate-backend", "restart")
# A fault that comes before the run has connected finds no session to end or server
# connection to break: the run then completes (0), which the invariants check.
_EXPECTED_EXIT = {"term": (143,), "terminate-backend": (3, 0), "restart": (0,)}
INVARIANTS = ("fault_exit", "rerun_exit", "schema", "ledger", "advisory_lock", "data")
_RUNNER_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name LIKE 'natlangchain-migrate/%' AND datname = current_database()"
)
_RESTRICT_PREFIXES = ("\\restrict ", "\\unrestrict ")  # pg_dump 18: a random key per dump
_SESSIONS = (
    "SELECT pid, application_name, state, left(query, 80) AS query FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
# Every user table and populated materialized view, without the columns that hold the
# time of day or an identity drawn from a sequence (a killed transaction burns values).
_DATA_COLUMNS = """
SELECT format('%I.%I', n.nspname, c.relname) AS relation,
       string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) AS columns
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
  AND c.relname <> 'schema_migrations'
  AND a.atttypid NOT IN ('timestamptz'::regtype, 'timestamp'::regtype)
  AND a.attidentity <> 'a'
GROUP BY 1
"""
_ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@dataclass
class Reference:
    """A history applied once cleanly by the CLI: what every trial must end up equal to."""

    folder: Path
    names: dict[int, str]  # version -> ledger name, e.g. 7 -> "007_create_table_4"
    dump: str
    data: dict[str, str]  # relation -> row count and digest of its rows
    clean_seconds: float  # wall time of a clean apply, from process start to exit (median)
    first_migration_s: float  # when the first migration started, from process start


@dataclass
class Trial:
    """One kill and rerun, and what was wrong afterwards (empty ``failures``: it passed)."""

    number: int
    delay: float
    killed_mid_run: bool  # the process was still running when the fault came
    phase: str  # where the kill landed, as the ledger shows it
    killed_during: str  # the migration the killed run had last started, if any
    rerun_exit: int
    rerun_output: str
    seconds: float
    failures: dict[str, str] = field(default_factory=dict)
    fault: str = "kill"
    fault_exit: int | None = None  # how the faulted run itself ended (None: SIGKILLed)

    def describe(self) -> str:
        verdict = "ok" if not self.failures else "FAIL " + ", ".join(self.failures)
        during = f" during {self.killed_during}" if self.killed_during else ""
        kill = f"{self.fault} at" if self.killed_mid_run else "no fault (exited by itself) before"
        ended = f" (it exited {self.fault_exit})" if self.fault_exit is not None else ""
        return (
            f"trial {self.number:3d}: {kill} {self.delay:6.3f} s{ended}, {self.phase}{during}; "
            f"rerun exit {self.rerun_exit}; {self.seconds:.1f} s; {verdict}"
        )

    def details(self) -> str:
        tail = "\n".join(self.rerun_output.splitlines()[-12:])
        problems = "\n".join(f"  {name}: {text}" for name, text in self.failures.items())
        return f"{self.describe()}\n{problems}\n  rerun output (tail):\n{tail}"


@contextmanager
def fresh_database(admin_url: str, prefix: str = "kill") -> Iterator[str]:
    """A new empty database (from template0), dropped on the way out."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(sql_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(sql_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def schema_dump(url: str) -> str:
    """``pg_dump --schema-only`` without the lines that differ between two dumps of one schema."""
    dumped = subprocess.run(
        [str(embedded_bindir() / "pg_dump"), "--schema-only", "-d", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return "".join(
        line for line in dumped.splitlines(keepends=True) if not line.startswith(_RESTRICT_PREFIXES)
    )


def _cli_environment(url: str) -> dict[str, str]:
    """The caller's environment without any migrate setting, then only the database URL."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("NATLANGCHAIN_MIGRATE_")
    }
    return inherited | {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}


def _cli(folder: Path) -> list[str]:
    return [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)]


def _events(output: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by the kill
                continue
    return events


def _since(started: float, event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp() - started


async def _data_digest(url: str) -> dict[str, str]:
    """Row count and md5 of the sorted rows of every relation that holds data."""
    conn = await asyncpg.connect(url)
    try:
        digest = {}
        for relation, columns in await conn.fetch(_DATA_COLUMNS):
            digest[relation] = await conn.fetchval(
                f"SELECT count(*) || ' rows, ' || "
                f"md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) "
                f"FROM (SELECT {columns} FROM {relation}) r"
            )
        return digest
    finally:
        await conn.close()


def clean_reference(admin_url: str, folder: Path, *, runs: int = 3) -> Reference:
    """Apply the history cleanly ``runs`` times, each on a fresh database, and keep the
    median duration (one slow run on a shared machine would send kills past the end).
    Clean runs must agree on schema and data, or the invariants could not tell a
    kill's damage from chance."""
    durations: list[float] = []
    firsts: list[float] = []
    outcomes: list[tuple[str, dict[str, str]]] = []
    names: dict[int, str] = {}
    for _ in range(runs):
        with fresh_database(admin_url, "ref") as url:
            wall_start, started = time.time(), time.monotonic()
            done = subprocess.run(
                _cli(folder), env=_cli_environment(url), capture_output=True, text=True, check=False
            )
            durations.append(time.monotonic() - started)
            if done.returncode != 0:
                raise RuntimeError(f"a clean apply of {folder} failed:\n{done.stderr[-3000:]}")
            events = _events(done.stderr)
            applying = [e for e in events if e["event"] == "migration_applying"]
            firsts.append(_since(wall_start, applying[0]) if applying else 0.0)
            outcomes.append((schema_dump(url), asyncio.run(_data_digest(url))))
            rows = asyncio.run(sql_fetch(url, "SELECT version, name FROM schema_migrations"))
            names = {row["version"]: row["name"] for row in rows}
    dump, data = outcomes[0]
    for other_dump, other_data in outcomes[1:]:
        if other_dump != dump:
            raise RuntimeError("two clean runs gave different schemas:\n" + _diff(dump, other_dump))
        if other_data != data:
            raise RuntimeError(
                "two clean runs gave different data: " + _diff_data(data, other_data)
            )
    return Reference(
        folder, names, dump, data, statistics.median(durations), statistics.median(firsts)
    )


def _wait_for_sessions_to_end(url: str, timeout: float = 30.0) -> list[str]:
    """Wait until no other session uses the database; return those still there at the end."""
    deadline = time.monotonic() + timeout
    while True:
        rows = asyncio.run(sql_fetch(url, _SESSIONS))
        if not rows or time.monotonic() > deadline:
            return [
                f"pid {r['pid']} {r['application_name']} {r['state']}: {r['query']}" for r in rows
            ]
        time.sleep(0.02)


def _phase(url: str, reference: Reference) -> str:
    """Where the run was when it died: before its first migration, inside, or after its last."""
    exists = asyncio.run(sql_fetch(url, "SELECT to_regclass('schema_migrations') IS NOT NULL AS t"))
    if not exists[0]["t"]:
        return "before the ledger"
    rows = asyncio.run(sql_fetch(url, "SELECT complete FROM schema_migrations"))
    if not rows:
        return "before the first migration"
    complete = sum(1 for row in rows if row["complete"])
    if complete == len(reference.names) and len(rows) == complete:
        return "after the last migration"
    return "mid-apply"


def _ledger_problems(url: str, reference: Reference) -> str:
    rows = asyncio.run(
        sql_fetch(url, "SELECT version, name, complete, last_error FROM schema_migrations")
    )
    copies = collections.Counter(row["version"] for row in rows)
    problems = [f"version {v} recorded {n} times" for v, n in copies.items() if n > 1]
    missing = sorted(set(reference.names) - set(copies))
    extra = sorted(set(copies) - set(reference.names))
    if missing:
        problems.append(f"{len(missing)} versions not recorded (first: {missing[:5]})")
    if extra:
        problems.append(f"unknown versions recorded: {extra[:5]}")
    for row in rows:
        if not row["complete"]:
            problems.append(f"{row['name']} incomplete: {(row['last_error'] or '')[:200]}")
        elif reference.names.get(row["version"], row["name"]) != row["name"]:
            problems.append(f"version {row['version']} recorded as {row['name']}")
    return "; ".join(problems[:6])


def _diff(expected: str, actual: str) -> str:
    """How many lines the dump lacks and has extra, and the first changed lines."""
    diff = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), n=0))[2:]
    lacking = sum(1 for line in diff if line.startswith("-"))
    extra = sum(1 for line in diff if line.startswith("+"))
    changed = [line for line in diff if line[:1] in "-+" and line[1:].strip(" -")][:8]
    return f"{lacking} lines missing, {extra} extra; first: " + " | ".join(changed)


def _diff_data(expected: dict[str, str], actual: dict[str, str]) -> str:
    """The relations whose rows differ: ``name: expected -> actual``."""
    differing = [
        f"{name}: {expected.get(name, 'absent')} -> {actual.get(name, 'absent')}"
        for name in sorted(set(expected) | set(actual))
        if expected.get(name) != actual.get(name)
    ]
    return f"{len(differing)} relations differ: " + "; ".join(differing[:5])


def kill_and_rerun(
    url: str,
    reference: Reference,
    delay: float,
    *,
    number: int = 1,
    fault: str = "kill",
    cluster: PgCluster | None = None,
    after_applying: int = 0,
) -> Trial:
    """On the empty database ``url``: start the CLI, inflict ``fault`` after ``delay``
    seconds (unless it is done), run it again plainly and check the invariants.

    With ``after_applying`` k, the ``delay`` counts from the k-th ``migration_applying``
    event instead of the start: a kill placed by the run's progress, which a loaded
    machine cannot push past the end of the run.
    """
    started = time.monotonic()
    env = _cli_environment(url)
    command = _cli(reference.folder) + (["--wait", "60"] if fault == "restart" else [])
    fault_exit: int | None = None
    with tempfile.TemporaryFile("w+") as output:  # a file: a full pipe would stall the CLI
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        killed = _wait_for_progress(process, output, after_applying)
        if killed:
            try:
                process.wait(timeout=delay)
                killed = False
            except subprocess.TimeoutExpired:
                fault_exit = _inflict(fault, process, url, cluster)
        output.seek(0)
        killed_output = output.read()
    applying = [e for e in _events(killed_output) if e["event"] == "migration_applying"]
    lingering = _wait_for_sessions_to_end(url)
    phase = _phase(url, reference)
    rerun = subprocess.run(
        _cli(reference.folder),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=max(300.0, 20 * reference.clean_seconds),
    )
    trial = Trial(
        number=number,
        fault=fault,
        fault_exit=fault_exit,
        delay=delay,
        killed_mid_run=killed,
        phase=phase,
        killed_during=applying[-1]["name"] if applying and killed else "",
        rerun_exit=rerun.returncode,
        rerun_output=rerun.stdout + rerun.stderr,
        seconds=0.0,
    )
    if lingering:
        trial.failures["sessions"] = "killed run's sessions outlived it: " + "; ".join(lingering)
    if fault_exit is not None and fault_exit not in _EXPECTED_EXIT.get(fault, (fault_exit,)):
        tail = " | ".join(killed_output.splitlines()[-2:])[:600]
        trial.failures["fault_exit"] = f"the {fault}ed run exited {fault_exit}: {tail}"
    _check_invariants(url, reference, trial)
    trial.seconds = time.monotonic() - started
    return trial


def _wait_for_progress(process: subprocess.Popen[bytes], output: IO[str], applying: int) -> bool:
    """Wait until the run has logged ``applying`` migration_applying events; False when
    it ended first."""
    while applying > 0 and process.poll() is None:
        output.seek(0)
        if output.read().count('"migration_applying"') >= applying:
            return True
        time.sleep(0.01)
    return process.poll() is None


def _inflict(
    fault: str, process: subprocess.Popen[bytes], url: str, cluster: PgCluster | None
) -> int | None:
    """Do ``fault`` to the running CLI; return its exit code (None after SIGKILL)."""
    if fault == "kill":
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None
    if fault == "term":
        process.send_signal(signal.SIGTERM)
    elif fault == "terminate-backend":
        asyncio.run(sql_fetch(url, _RUNNER_SESSIONS))
    elif fault == "restart":
        if cluster is None:
            raise ValueError("the restart fault needs the harness's own server (no --admin-url)")
        subprocess.run(
            [
                cluster.bin("pg_ctl"),
                "-D",
                str(cluster.data),
                "-m",
                "fast",
                "-w",
                "restart",
                "-l",
                str(cluster.root / "log"),
            ],
            check=True,
            capture_output=True,
            user=cluster.user,
        )
    try:
        return process.wait(timeout=120 if fault == "restart" else 15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def _check_invariants(url: str, reference: Reference, trial: Trial) -> None:
    if trial.rerun_exit != 0:
        failed = [e for e in _events(trial.rerun_output) if e["event"] == "migration_failed"]
        trial.failures["rerun_exit"] = (
            f"exit {trial.rerun_exit}: {failed[-1]['file']} sqlstate {failed[-1]['sqlstate']}"
            if failed
            else f"exit {trial.rerun_exit}"
        )
    actual = schema_dump(url)
    if actual != reference.dump:
        trial.failures["schema"] = "pg_dump differs: " + _diff(reference.dump, actual)
    if ledger := _ledger_problems(url, reference):
        trial.failures["ledger"] = ledger
    data = asyncio.run(_data_digest(url))
    if data != reference.data:
        trial.failures["data"] = _diff_data(reference.data, data)
    lingering = _wait_for_sessions_to_end(url, timeout=10.0)
    locks = asyncio.run(sql_fetch(url, _ADVISORY_LOCKS))[0][0]
    if locks:
        trial.failures["advisory_lock"] = f"{locks} advisory locks held; sessions: {lingering}"


def run_trials(
    admin_url: str,
    reference: Reference,
    trials: int,
    *,
    seed: int = 0,
    earliest: float = 0.0,
    echo: bool = False,
    fault: str = "kill",
    cluster: PgCluster | None = None,
) -> list[Trial]:
    """``trials`` kills, each on a fresh database, at delays uniform over a clean run
    (from ``earliest`` seconds on: a few trials are better spent after start-up)."""
    rng = random.Random(f"faults-{seed}")
    results = []
    for number in range(1, trials + 1):
        delay = rng.uniform(earliest, reference.clean_seconds)
        with fresh_database(admin_url) as url:
            trial = kill_and_rerun(
                url, reference, delay, number=number, fault=fault, cluster=cluster
            )
        results.append(trial)
        if echo:
            print(trial.describe(), flush=True)
    return results


def summary(trials: Sequence[Trial]) -> str:
    """The figures: kills mid-run and where, failures by invariant, rerun errors, durations."""
    phases = collections.Counter(t.phase for t in trials if t.killed_mid_run)
    failed = [t for t in trials if t.failures]
    by_invariant = collections.Counter(name for t in trials for name in t.failures)
    errors = collections.Counter(
        e.get("sqlstate") or e.get("error_type")
        for t in failed
        for e in _events(t.rerun_output)[-3:]
        if e["event"] == "migration_failed"
    )
    seconds = [t.seconds for t in trials]
    mid_run = sum(t.killed_mid_run for t in trials)
    lines = [
        f"trials: {len(trials)}; kills that landed mid-run: {mid_run} "
        f"({', '.join(f'{phase}: {n}' for phase, n in sorted(phases.items()))}); "
        f"runs that ended by themselves before the kill: {len(trials) - mid_run}",
        f"failed trials: {len(failed)} of {len(trials)}"
        f" ({100 * len(failed) / max(1, len(trials)):.0f}%); by invariant: "
        + ", ".join(f"{name} {by_invariant.get(name, 0)}" for name in INVARIANTS)
        + "".join(f", {n} {c}" for n, c in by_invariant.items() if n not in INVARIANTS),
    ]
    mid_apply = [t for t in trials if t.killed_mid_run and t.phase == "mid-apply"]
    lines.append(
        f"kills mid-apply that broke an invariant: {sum(bool(t.failures) for t in mid_apply)}"
        f" of {len(mid_apply)}; rerun exited 0 yet left a wrong state: "
        f"{sum(1 for t in failed if t.rerun_exit == 0)}"
    )
    if errors:
        lines.append(
            "rerun errors by sqlstate: " + ", ".join(f"{k} x{n}" for k, n in errors.items())
        )
    if seconds:
        lines.append(
            f"trial time: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s, "
            f"total {sum(seconds):.1f} s"
        )
    return "\n".join(lines)


def _history(args: argparse.Namespace, workdir: Path) -> Path:
    if args.migrations_dir:
        return Path(args.migrations_dir)
    folder = workdir / "history"
    write_history(folder, args.count, no_transaction=args.mode == "no-transaction", seed=args.seed)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=50, help="kills, one at a time (50)")
    parser.add_argument(
        "--mode", choices=MODES, default="no-transaction", help="the kind of generated files"
    )
    parser.add_argument("--count", type=int, default=300, help="migrations in the history")
    parser.add_argument("--seed", type=int, default=0, help="of the history and of the delays")
    parser.add_argument(
        "--fault", choices=FAULTS, default="kill", help="what happens to the run (kill)"
    )
    parser.add_argument("--admin-url", help="a server to use (default: start one)")
    parser.add_argument("--migrations-dir", help="kill runs of these files instead")
    args = parser.parse_args(argv)
    cluster = None
    workdir = Path(tempfile.mkdtemp(prefix="nlcm-faults-"))
    try:
        if args.admin_url:
            admin_url = args.admin_url
        else:
            cluster = PgCluster(embedded_bindir(), name="faults").init().start()
            admin_url = cluster.dsn()
        folder = _history(args, workdir)
        reference = clean_reference(admin_url, folder)
        print(
            f"fault {args.fault}, mode {args.mode}: {len(reference.names)} migrations in {folder}"
            f" (seed {args.seed}); clean apply {reference.clean_seconds:.2f} s (median of 3)"
            f" (first migration at {reference.first_migration_s:.2f} s)",
            flush=True,
        )
        trials = run_trials(
            admin_url,
            reference,
            args.trials,
            seed=args.seed,
            echo=True,
            fault=args.fault,
            cluster=cluster,
        )
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    print(summary(trials))
    failed = [t for t in trials if t.failures]
    first_of_each_kind: dict[tuple[str, ...], Trial] = {}
    for trial in failed:
        first_of_each_kind.setdefault(tuple(trial.failures), trial)
    for trial in list(first_of_each_kind.values())[:5]:
        print("\n" + trial.details())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
