"""A rolling deploy under traffic: requests, failures and latency while release B replaces
release A, beside steady traffic with no migration running, in the same run.

    .venv/bin/python benchmarks/rolling_deploy.py [--runs N] [--concurrency 24] [--replicas 4]

Each run deploys twice, on a fresh database each (harness/rolling.py): B's column rename as
expand + contract, then the control, the same rename in one step (``ALTER TABLE ... RENAME
COLUMN`` at the first B replica's start-up). Each replica is a uvicorn process of its own
that migrates at start-up and heartbeats; a closed-loop load generator keeps ``concurrency``
requests in flight (70% reads, 15% inserts, 15% updates) over the replicas in rotation.

Phases, per deploy: ``steady`` (A only, nothing migrating), ``expand`` (the first B replica's
start-up, which applies B's ``002`` while A serves), ``rollout`` (from then to the last A
replica's stop, one A replica restarted on the way), ``contract`` (the post-deploy Job,
``natlangchain-migrate contract``), ``after`` (B alone, until the deploy has sent
``--min-requests``). Latency is per request, client side, from send to the answer's end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import uuid

import structlog

from harness.pgcluster import PgCluster, embedded_bindir
from harness.releases import Rename
from harness.rolling import PHASES, RolloutResult, rolling_deploy
from harness.sql import execute as sql_execute

RENAMES: tuple[Rename, ...] = ("expand_contract", "one_step")


def deploy(cluster: PgCluster, rename: Rename, args: argparse.Namespace) -> RolloutResult:
    """One deploy on a database of its own, dropped afterwards."""
    name = f"rolling_{uuid.uuid4().hex[:10]}"
    asyncio.run(sql_execute(cluster.dsn(), f'CREATE DATABASE "{name}"'))
    try:
        return asyncio.run(
            rolling_deploy(
                cluster.dsn(name),
                rename,
                replicas=args.replicas,
                concurrency=args.concurrency,
                min_requests=args.min_requests,
                steady_s=args.steady,
            )
        )
    finally:
        asyncio.run(sql_execute(cluster.dsn(), f'DROP DATABASE "{name}" WITH (FORCE)'))


def report(result: RolloutResult) -> None:
    failures = len(result.failures)
    restarted = ", ".join(
        f"{name} {'served ' + str(count) if count is not None else 'never came back'}"
        for name, count in result.restarted.items()
    )
    contracts = [f"{row['version']:03d} at {row['applied_at']:%H:%M:%S.%f}" for row in
                 result.contracts]  # fmt: skip
    print(
        f"{result.rename}: {len(result.samples)} requests, {failures} failed; restarted: "
        f"{restarted}; contract parts applied: {contracts or 'none'} (last A stopped "
        f"{result.last_a_stopped_at:%H:%M:%S.%f}); advisory locks left: "
        f"{result.advisory_locks_after}; rows out of sync when the last A stopped: "
        f"{'n/a' if result.out_of_sync_rows is None else result.out_of_sync_rows}; "
        f"resent on a fresh connection: {sum(result.resent.values())}; contract Job exits: "
        f"{', '.join(f'{job.phase} {job.returncode}' for job in result.jobs)}; readiness "
        f"probes (--check) not 0: {[name for name, code in result.probes.items() if code]}"
    )
    print(f"  {'phase':<9}{'seconds':>8}{'requests':>10}{'failed':>8}{'req/s':>8}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")  # fmt: skip
    for phase in PHASES:
        figures = result.figures(phase)
        rate = figures.requests / figures.seconds if figures.seconds else 0.0
        print(
            f"  {phase:<9}{figures.seconds:8.1f}{figures.requests:10d}{figures.failures:8d}"
            f"{rate:8.0f}{figures.p50_ms:9.1f}{figures.p99_ms:9.1f}{figures.max_ms:9.0f}"
        )
    if result.failures:
        first = result.failures[0]
        print(f"  first failure: {first.replica} {first.kind}: {first.failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--min-requests", type=int, default=10_000)
    parser.add_argument("--steady", type=float, default=6.0, help="seconds of steady traffic")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cluster = PgCluster(embedded_bindir(), name="rolling").init(fsync="on", full_page_writes="on")
    cluster.start()
    try:
        print(
            f"server: {embedded_bindir().parent.name} binaries, TCP 127.0.0.1, fsync on; "
            f"{args.replicas} replicas, {args.concurrency} requests in flight",
            flush=True,
        )
        for run in range(1, args.runs + 1):
            print(f"run {run}:")
            for rename in RENAMES:
                report(deploy(cluster, rename, args))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
