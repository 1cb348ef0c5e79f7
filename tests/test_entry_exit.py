"""The CLI's process ends without the interpreter's teardown (entry.py), and still
exits as an ordinary exit would: its code, every line of its output, and the exit
handlers registered in it (logging's, an OpenTelemetry exporter's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from natlangchain_migrate.errors import ExitCode
from tests.conftest import cli_environment, log_events, write_migrations

# A process that registers an exit handler and then runs the CLI's entry point.
_WITH_HANDLER = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('exit handler ran', file=sys.stderr, flush=True))\n"
    "sys.argv = ['natlangchain-migrate', *sys.argv[1:]]\n"
    "from natlangchain_migrate.entry import main\n"
    "sys.exit(main())\n"
)


def _run(*args: str, database_url: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITH_HANDLER, *args],
        capture_output=True,
        text=True,
        env=cli_environment(database_url, None),
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("flags", [[], ["--check"], ["--status"], ["--status", "--json"]])
def test_a_run_keeps_its_code_its_output_and_its_exit_handlers(
    database_url: str, tmp_path: Path, flags: list[str]
) -> None:
    names = {f"{n:03d}_t{n}.sql": f"CREATE TABLE t{n} (id int);\n" for n in range(1, 201)}
    folder = write_migrations(tmp_path / "m", names)
    done = _run("--migrations-dir", str(folder), database_url=database_url)
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stderr.rstrip().endswith("exit handler ran")
    assert any(event["event"] == "migrate_done" for event in log_events(done.stderr))
    again = _run("--migrations-dir", str(folder), *flags, database_url=database_url)
    assert again.returncode == ExitCode.OK, again.stderr
    assert "exit handler ran" in again.stderr
    if "--status" in flags:  # every one of the 200 rows reached the pipe
        assert again.stdout.count("t200") == 1
        assert all(f"t{n}" in again.stdout for n in range(1, 201))


def test_a_failed_run_keeps_its_exit_code(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;\n"})
    refused = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    failed = _run("--migrations-dir", str(folder), database_url=refused)
    assert failed.returncode not in (ExitCode.OK, ExitCode.INTERNAL), failed.stderr
    assert [e["event"] for e in log_events(failed.stderr)][-1] == "run_failed"
    assert failed.stderr.rstrip().endswith("exit handler ran")
