"""What a container's init command imports: a start-up is mostly imports, so the modules
it does not need stay out (the benchmark measures the time; this keeps the budget)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = (
    "import sys\n"
    "from natlangchain_migrate.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = ['structlog', 'anyio', 'pglast', 'opentelemetry', 'shutil']\n"
    "print(__import__('json').dumps([name for name in heavy if name in sys.modules]))\n"
    "sys.exit(code)\n"
)


@pytest.mark.parametrize("runs", [1, 2], ids=["fresh-apply", "up-to-date"])
def test_the_cli_applying_or_finding_nothing_to_do_imports_no_heavy_module(
    database_url: str, runs: int
) -> None:
    environment = os.environ | {"DATABASE_URL": database_url}
    environment["NATLANGCHAIN_MIGRATE_LOG_FORMAT"] = "json"
    for _ in range(runs):
        run = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
        assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []
