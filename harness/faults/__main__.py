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
import shutil
import sys
import tempfile
from pathlib import Path

from harness.faults.history import write_history
from harness.faults.trials import (
    FAULTS,
    MODES,
    Trial,
    clean_reference,
    run_trials,
    summary,
)
from harness.servers.pgcluster import PgCluster, embedded_bindir


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
