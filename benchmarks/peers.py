"""natlangchain-migrate beside dbmate, yoyo and alembic on NatLangChain's 001 and 003.

    .venv/bin/python benchmarks/peers.py --install      # the peers: pip + npm, once
    .venv/bin/python benchmarks/peers.py [--rounds N] [--only W,...] [--tools T,...]
    .venv/bin/python benchmarks/peers.py --from-json docs/peers.json   # redraw only

Starts the machine's own PostgreSQL (``pg_config --bindir``, fsync on) and talks TCP
with a password, as dbmate and alembic need. Workloads, each beside a floor measured
in the same run, interleaved, rotating who goes first, medians:

- fresh_apply: one process applies 001+003 to a fresh database (a container's init
  command); floor: a Python process importing asyncpg and sending the files in one
  transaction.
- noop_process: one process finds nothing to do; floor: a process importing asyncpg,
  connecting and running SELECT 1.
- concurrent_processes: 16 processes at once on a fresh database: wall time, the ones
  that exited non-zero, and the end state (each body applied once, the ledger complete,
  no lock left); floor: 16 floor processes of noop_process plus the floor of fresh_apply.
- noop_in_process: an API start-up with nothing to do, for the Python tools (ours
  ``await migrate()``, yoyo's and alembic's APIs); floor: asyncpg connect + SELECT 1.

Writes docs/peers.json, docs/peers.png and the table in README.md between its markers.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from benchmarks.peer_report import (
    Measurement,
    Results,
    render_chart,
    render_table,
    update_readme,
)
from benchmarks.peer_tools import (
    IN_PROCESS_NOOP,
    PEERS_DIR,
    PYTHON,
    TOOL_NAMES,
    Tool,
    available_tools,
    end_state_problems,
    workload_files,
)
from harness.servers.pgcluster import PASSWORD, PgCluster, system_bindir
from harness.servers.sql import execute as sql_execute
from harness.servers.sql import fetchval as sql_fetchval
from natlangchain_migrate import migrate
from natlangchain_migrate.logs import configure_logging

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
FLOOR = "floor"

FLOOR_NOOP = (
    "import asyncio, asyncpg, os\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
    "    await conn.fetchval('SELECT 1')\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)
FLOOR_APPLY = (
    "import asyncio, asyncpg, os, sys\n"
    "async def main():\n"
    "    sql = ''.join(open(path).read() for path in sys.argv[1:])\n"
    "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
    "    await conn.execute('BEGIN;\\n' + sql + '\\nCOMMIT;')\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)


class Failure(Exception):
    """A tool run that exited non-zero where it had to succeed."""


class Server:
    """The PostgreSQL 15 cluster, fresh databases, and a run of one command."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.admin = cluster.socket_dsn()

    def fresh_database(self) -> str:
        name = f"p_{uuid.uuid4().hex[:10]}"
        asyncio.run(sql_execute(self.admin, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        return self.cluster.dsn(name)

    def version(self) -> str:
        return str(asyncio.run(sql_fetchval(self.admin, "SHOW server_version"))).split()[0]


ERROR_LINE = re.compile(r"error[\"']?:", re.IGNORECASE)


def _error_line(stderr: str) -> str:
    """The line of a failed run's stderr that says what went wrong, password scrubbed: the
    last one with ``Error:``, ``SomethingError:`` or a JSON ``"error":`` (a SQLAlchemy
    traceback ends with a link, not the error), else the last line."""
    lines = stderr.strip().splitlines() or [""]
    named = [line for line in lines if ERROR_LINE.search(line)]
    return (named or lines)[-1].replace(PASSWORD, "***").strip()[:300]


def _env(extra: dict[str, str]) -> dict[str, str]:
    return os.environ | extra


def _run(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Seconds, exit code and the error line of stderr of one whole process."""
    started = time.perf_counter()
    done = subprocess.run(args, env=_env(env), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    return elapsed, done.returncode, _error_line(done.stderr)


def _concurrent(args: list[str], env: dict[str, str], count: int) -> tuple[float, int, str]:
    """Wall seconds of ``count`` copies started at once, how many exited non-zero, and the
    error line of the first of those."""
    with tempfile.TemporaryDirectory(prefix="nlcm-peers-stderr-") as folder:
        logs = [Path(folder) / f"{number}.err" for number in range(count)]
        started = time.perf_counter()
        procs = []
        for log in logs:
            with log.open("w") as handle:
                procs.append(
                    subprocess.Popen(args, env=_env(env), stdout=subprocess.DEVNULL, stderr=handle)
                )
        codes = [proc.wait() for proc in procs]
        wall = time.perf_counter() - started
        failed = [log for log, code in zip(logs, codes, strict=True) if code]
        last = _error_line(failed[0].read_text()) if failed else ""
    return wall, len(failed), last


class Comparison:
    """The tools' folders of generated files, and the workloads."""

    def __init__(self, server: Server, tools: list[Tool], rounds: int) -> None:
        self.server = server
        self.tools = tools
        self.rounds = rounds
        self.scratch = Path(tempfile.mkdtemp(prefix="nlcm-peers-"))
        self.folders: dict[str, Path] = {}
        for tool in tools:
            folder = self.scratch / tool.name
            folder.mkdir()
            tool.write_files(folder)
            self.folders[tool.name] = folder
        self.floor_files = self.scratch / "floor"
        self.floor_files.mkdir()
        for stem, sql in workload_files().values():
            (self.floor_files / f"{stem}.sql").write_text(sql)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _order(self, round_number: int) -> list[str]:
        """Floor and tools, rotated by one each round so no one always goes first."""
        names = [FLOOR, *(tool.name for tool in self.tools)]
        shift = round_number % len(names)
        return names[shift:] + names[:shift]

    def _tool(self, name: str) -> Tool:
        return next(tool for tool in self.tools if tool.name == name)

    def _tool_run(self, tool: Tool, url: str) -> tuple[list[str], dict[str, str]]:
        return tool.command(self.folders[tool.name], url), tool.env(url)

    def _floor_apply(self) -> list[str]:
        files = sorted(str(path) for path in self.floor_files.glob("*.sql"))
        return [PYTHON, "-c", FLOOR_APPLY, *files]

    def _new(self, workload: str) -> dict[str, Measurement]:
        return {name: Measurement(name, workload) for name in [FLOOR, *self.folders]}

    def fresh_apply(self) -> list[Measurement]:
        found = self._new("fresh_apply")
        for number in range(self.rounds):
            for name in self._order(number):
                url = self.server.fresh_database()
                if name == FLOOR:
                    args, env = self._floor_apply(), {"DATABASE_URL": url}
                else:
                    args, env = self._tool_run(self._tool(name), url)
                elapsed, code, last = _run(args, env)
                found[name].add(elapsed, failed=code != 0, note=last if code else "")
                if name != FLOOR:
                    found[name].check(asyncio.run(end_state_problems(url, self._tool(name))))
        return list(found.values())

    def noop_process(self) -> list[Measurement]:
        found = self._new("noop_process")
        urls: dict[str, str] = {FLOOR: self.server.fresh_database()}
        for tool in self.tools:
            urls[tool.name] = self.server.fresh_database()
            args, env = self._tool_run(tool, urls[tool.name])
            elapsed, code, last = _run(args, env)
            if code:
                found[tool.name].add(elapsed, failed=True, note=f"first apply: {last}")
        for number in range(self.rounds * 2):
            for name in self._order(number):
                if name == FLOOR:
                    args, env = [PYTHON, "-c", FLOOR_NOOP], {"DATABASE_URL": urls[FLOOR]}
                elif found[name].failures:
                    continue
                else:
                    args, env = self._tool_run(self._tool(name), urls[name])
                elapsed, code, last = _run(args, env)
                found[name].add(elapsed, failed=code != 0, note=last if code else "")
        for tool in self.tools:
            found[tool.name].check(asyncio.run(end_state_problems(urls[tool.name], tool)))
        return list(found.values())

    def concurrent_processes(self) -> list[Measurement]:
        found = self._new("concurrent_processes")
        for number in range(self.rounds):
            for name in self._order(number):
                if name == FLOOR:
                    url = self.server.fresh_database()
                    env = {"DATABASE_URL": url}
                    wall, failed, _ = _concurrent([PYTHON, "-c", FLOOR_NOOP], env, CONCURRENCY)
                    alone, code, _ = _run(self._floor_apply(), {"DATABASE_URL": url})
                    found[FLOOR].add(wall + alone, failed=bool(failed or code))
                    continue
                tool, url = self._tool(name), self.server.fresh_database()
                args, env = self._tool_run(tool, url)
                wall, failed, last = _concurrent(args, env, CONCURRENCY)
                found[name].add(wall, failed=failed != 0, processes_failed=failed, note=last)
                found[name].check(asyncio.run(end_state_problems(url, tool)))
        return list(found.values())

    def noop_in_process(self) -> list[Measurement]:
        """Python tools only, in this process, one event loop for the asyncio ones."""
        found = self._new("noop_in_process")
        calls: dict[str, Callable[[], None]] = {}
        with asyncio.Runner() as loop:
            floor_url = self.server.fresh_database()

            async def floor() -> None:
                import asyncpg

                conn = await asyncpg.connect(floor_url)
                await conn.fetchval("SELECT 1")
                await conn.close()

            calls[FLOOR] = lambda: loop.run(floor())
            for tool in self.tools:
                folder, url = self.folders[tool.name], self.server.fresh_database()
                args, env = self._tool_run(tool, url)
                _, code, last = _run(args, env)
                if code:
                    found[tool.name].add(0.0, failed=True, note=f"first apply: {last}")
                elif tool.name == "natlangchain-migrate":
                    calls[tool.name] = _ours_in_process(loop, folder, url)
                elif tool.name in IN_PROCESS_NOOP:
                    calls[tool.name] = functools.partial(IN_PROCESS_NOOP[tool.name], folder, url)
            for call in calls.values():  # warm-up: imports and first connections
                call()
            for number in range(self.rounds * 5):
                for name in self._order(number):
                    if name in calls:
                        started = time.perf_counter()
                        calls[name]()
                        found[name].add(time.perf_counter() - started)
        return [found[name] for name in found if found[name].samples or found[name].failures]


def _ours_in_process(loop: asyncio.Runner, folder: Path, url: str) -> Callable[[], None]:
    def call() -> None:
        loop.run(migrate(url, migrations_dir=folder))

    return call


WORKLOADS: dict[str, Callable[[Comparison], list[Measurement]]] = {
    "fresh_apply": Comparison.fresh_apply,
    "noop_process": Comparison.noop_process,
    "concurrent_processes": Comparison.concurrent_processes,
    "noop_in_process": Comparison.noop_in_process,
}


def install() -> int:
    """pip-install the Python peers into this interpreter's venv, npm-install dbmate."""
    pip = [PYTHON, "-m", "pip", "install", "-q", "-r", str(PEERS_DIR / "requirements.txt")]
    npm = [
        "npm",
        "install",
        "--prefix",
        str(PEERS_DIR),
        "--no-audit",
        "--no-fund",
        "--no-package-lock",
    ]
    for args in (pip, npm):
        print("$", " ".join(args), flush=True)
        code = subprocess.run(args, check=False).returncode
        if code:
            print(f"error: {args[0]} exited {code}", file=sys.stderr)
            return code
    return 0


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(repr, unknown)) or repr(text)}: choose from {', '.join(allowed)}"
            )
        return names

    return parse


def _machine() -> str:
    cores = os.cpu_count()
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return f"{cores} cores{', ' + model if model else ''}, {sys.platform}"


def measure(args: argparse.Namespace) -> Results:
    bindir = system_bindir()
    if bindir is None:
        raise SystemExit("error: no PostgreSQL server binaries here (pg_config --bindir)")
    tools, skipped = available_tools(args.tools)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", flush=True)
    compileall.compile_dir(str(ROOT / "natlangchain_migrate"), quiet=1)
    configure_logging("json")
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(open(os.devnull, "w")))  # noqa: SIM115
    cluster = PgCluster(bindir, name="peers").init(fsync="on", full_page_writes="on")
    cluster.start()
    server = Server(cluster)
    comparison = Comparison(server, tools, args.rounds)
    try:
        results = Results(
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            machine=_machine(),
            server=f"PostgreSQL {server.version()} ({bindir}), TCP 127.0.0.1, fsync on",
            rounds=args.rounds,
            concurrency=CONCURRENCY,
            versions={tool.name: tool.version for tool in tools},
            skipped=skipped,
        )
        print(f"server: {results.server}; python: {PYTHON}", flush=True)
        for workload in args.only:
            for measurement in WORKLOADS[workload](comparison):
                results.measurements.append(measurement)
            print(render_table(results, only=workload), flush=True)
        return results
    finally:
        comparison.close()
        cluster.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install the peers and exit")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only",
        type=_choices(tuple(WORKLOADS)),
        default=list(WORKLOADS),
        metavar="W,...",
        help=f"comma-separated: {', '.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--tools",
        type=_choices(TOOL_NAMES),
        default=list(TOOL_NAMES),
        metavar="T,...",
        help=f"comma-separated: {', '.join(TOOL_NAMES)} (default: all)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "peers.json")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "peers.png")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument(
        "--from-json", type=Path, help="redraw the chart and README table from this file"
    )
    args = parser.parse_args()
    if args.install:
        return install()
    if args.from_json:
        results = Results.load(args.from_json)
    else:
        results = measure(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        results.save(args.json)
    print(render_table(results), flush=True)
    render_chart(results, args.chart)
    update_readme(results, args.readme)
    written = "" if args.from_json else f"{args.json}, "
    print(f"wrote {written}{args.chart}, the table in {args.readme}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
