"""``natlangchain-migrate fleet``: every tenant schema or database migrated in one run.

    fleet --each-schema 'tenant_%' --concurrency 8 --canary 2 --max-failures 5
    fleet --targets databases.txt --shard 0/4
    fleet --each-schema 'tenant_%' --check

It parses flags and calls ``Fleet`` (fleet.py); the report is fleet_report.py's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.commands import ENV, PROG, env_setting
from natlangchain_migrate.commands.shared import (
    add_database_flags,
    add_execution_flags,
    add_lock_flags,
    add_log_flags,
    database_dsn,
    execution_options,
    log_format_problem,
    run_logged,
)
from natlangchain_migrate.errors import ExitCode

if TYPE_CHECKING:
    from natlangchain_migrate.fleet_report import TargetResult

_EPILOG = f"""environment variables (a flag wins over its variable): {ENV}EACH_SCHEMA,
{ENV}SCHEMAS_FROM_QUERY, {ENV}TARGETS, {ENV}CONCURRENCY, {ENV}SERVER_CAP,
{ENV}CANARY, {ENV}MAX_FAILURES, {ENV}SHARD, and those of the main command
(DATABASE_URL, {ENV}DIR, {ENV}LOCK_TIMEOUT, ...).

exit codes: 0 every target migrated (or, with --check, current); 26 some targets failed
(each rolled back; the others migrated; a rerun retries only those behind); 27 the rollout
stopped early (a canary failed, or --max-failures was reached); 2 bad usage or targets
file; --check: 10 pending, 11 drift, 12 failed part-way, 3 a database unreachable."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} fleet",
        description="migrate every target (tenant schemas of one database, or databases "
        "listed in a file), each under its own lock, a canary first, one report",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="one line per target, a summary")
    action.add_argument(
        "--check",
        action="store_true",
        help="read-only: the targets not current, a summary; exit 0, 10, 11, 12 or 3",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--each-schema",
        default=env_setting("EACH_SCHEMA"),
        metavar="PATTERN",
        help="every schema matching this LIKE pattern (tenant\\_%% or tenant_%%)",
    )
    which.add_argument(
        "--schemas-from-query",
        default=env_setting("SCHEMAS_FROM_QUERY"),
        metavar="SQL",
        help="the schemas this query returns (one text column; a schema not there yet is created)",
    )
    parser.add_argument(
        "--targets",
        type=Path,
        default=env_setting("TARGETS"),
        metavar="FILE",
        help="databases, one DSN per line, passwords as ${VARIABLE} or in a passfile "
        "(default: --database-url alone)",
    )
    _add_count(parser, "--concurrency", "N", "targets migrated at once (default 8)", "8")
    _add_count(
        parser,
        "--server-cap",
        "N",
        "targets migrated at once per server (default: half its free connections)",
    )
    _add_count(
        parser,
        "--canary",
        "K",
        "migrate K behind targets first; a failure among them stops the rollout",
        "0",
    )
    _add_count(
        parser,
        "--max-failures",
        "F",
        "stop starting targets after F failures (default: go on through all)",
    )
    parser.add_argument(
        "--shard",
        default=env_setting("SHARD"),
        metavar="I/N",
        help="take only the targets whose id hashes to I of N (0-based; stable)",
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    parser.add_argument(
        "--verbose", action="store_true", help="log each target's own events too (info)"
    )
    add_database_flags(parser, schema_help="the schema of each database, without a pattern")
    add_lock_flags(parser, namespace_and_mode=False)
    add_execution_flags(parser)
    add_log_flags(parser)
    return parser


def _add_count(
    parser: argparse.ArgumentParser,
    flag: str,
    metavar: str,
    help_text: str,
    default: str | None = None,
) -> None:
    """A whole-number flag whose variable has its name (--server-cap: ...SERVER_CAP)."""
    variable = flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(
        flag, type=int, default=env_setting(variable, default), metavar=metavar, help=help_text
    )


def main(argv: list[str]) -> int:
    """Run the fleet; the exit code says whether every target made it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = log_format_problem(args.log_format)
    if problem:
        parser.error(problem)
    code, failed = run_logged(args, lambda: _run(args))
    return failed if code is None else code


def _print_progress(result: TargetResult, done: int, total: int) -> None:
    """A line as each target finishes: ``[12/200] tenant_7: applied 2, 3 (1 -> 3) in 41 ms``."""
    print(f"[{done}/{total}] {result.line()}", flush=True)


async def _run(args: argparse.Namespace) -> int:
    from natlangchain_migrate.fleet_api import fleet_of, fleet_status
    from natlangchain_migrate.fleet_targets import parse_shard, read_targets_file

    targets = None
    if args.targets is not None:
        targets = [database.dsn for database in read_targets_file(args.targets)]
    dsn = None if targets else await database_dsn(args.database_url)
    execution = execution_options(args)
    fleet = fleet_of(
        dsn,
        targets=targets,
        each_schema=args.each_schema or None,
        schemas_from_query=args.schemas_from_query or None,
        schema=args.schema,
        migrations_dir=args.migrations_dir,
        concurrency=args.concurrency,
        server_cap=args.server_cap,
        canary=args.canary,
        max_failures=args.max_failures,
        shard=parse_shard(args.shard) if args.shard else None,
        lock_timeout=args.lock_wait,
        pg_lock_timeout=execution.pg_lock_timeout,
        statement_timeout=execution.statement_timeout,
        lock_retries=execution.lock_retries,
        wait=args.wait,
        quiet=not args.verbose,
    )
    if args.status or args.check:
        from natlangchain_migrate.fleet_report import status_exit_code, status_summary

        states = await fleet_status(fleet)
        if args.json:
            import json

            objects = [state._asdict() | {"exit_code": int(state.exit_code)} for state in states]
            print(json.dumps({"exit_code": int(status_exit_code(states)), "targets": objects}))
        else:
            for state in states:
                if args.status or state.exit_code != ExitCode.OK:
                    print(state.line())
            print(status_summary(states))
        return status_exit_code(states)
    report = await fleet.up(None if args.json else _print_progress)
    if args.json:
        print(report.to_json())
    else:
        print(report.summary())
    return report.exit_code
