"""What the pytest plugin costs per test: cloning the migrated template and dropping the
clone, against migrating a fresh database from scratch, interleaved, medians.

    .venv/bin/python benchmarks/plugin_cost.py [--rounds N] [--migrations-dir DIR] [--fast]

Both sides run on one connection kept open through an event loop in a thread, as
the plugin's fixtures do: per test, ``CREATE DATABASE ... TEMPLATE`` plus ``DROP
DATABASE``, against ``CREATE DATABASE`` (empty) + ``migrate()`` + ``DROP DATABASE``.
The server is a throwaway PostgreSQL 18 with fsync on (``--fast``: fsync off, in
/dev/shm where there is room, as the test suite runs it).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog
from anyio.from_thread import BlockingPortal, start_blocking_portal

from harness.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from natlangchain_migrate import migrate
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.template_databases import TemplateDatabases


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _clone_and_drop(portal: BlockingPortal, templates: TemplateDatabases) -> None:
    url = portal.call(templates.clone)
    portal.call(templates.drop, url)


def _migrate_from_scratch(
    portal: BlockingPortal, templates: TemplateDatabases, migrations_dir: Path | None
) -> None:
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    portal.call(templates.conn.execute, f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = with_database(templates.admin_url, name)
    portal.call(lambda: migrate(url, migrations_dir=migrations_dir))
    portal.call(templates.drop, url)


def measure(cluster: PgCluster, *, rounds: int, migrations_dir: Path | None) -> float:
    """Print both medians and their ratio; return the ratio."""
    templates = TemplateDatabases(cluster.socket_dsn(), migrations_dir)
    with start_blocking_portal() as portal:
        opened = _timed(lambda: portal.call(templates.open))
        try:
            _clone_and_drop(portal, templates)  # warm both paths once
            _migrate_from_scratch(portal, templates, migrations_dir)
            clone_ms: list[float] = []
            scratch_ms: list[float] = []
            for _ in range(rounds):
                clone_ms.append(_timed(lambda: _clone_and_drop(portal, templates)))
                scratch_ms.append(
                    _timed(lambda: _migrate_from_scratch(portal, templates, migrations_dir))
                )
        finally:
            portal.call(templates.close)
    clone, scratch = statistics.median(clone_ms), statistics.median(scratch_ms)
    which = str(migrations_dir) if migrations_dir else "NatLangChain's 001-003"
    print(
        f"per test, {which}: clone + drop {clone:6.1f} ms vs migrate from scratch "
        f"{scratch:6.1f} ms -> {scratch / clone:4.1f}x cheaper (n={rounds}; clone range "
        f"{min(clone_ms):.1f}-{max(clone_ms):.1f} ms; template built once in {opened:.0f} ms)",
        flush=True,
    )
    return scratch / clone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--migrations-dir", type=Path, default=None)
    parser.add_argument("--fast", action="store_true", help="fsync off, in /dev/shm")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if args.fast:
        cluster = PgCluster(embedded_bindir(), name="plugbench", parent=memory_backed_dir()).init()
    else:
        cluster = PgCluster(embedded_bindir(), name="plugbench").init(
            fsync="on", full_page_writes="on"
        )
    cluster.start()
    try:
        measure(cluster, rounds=args.rounds, migrations_dir=args.migrations_dir)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
