"""``natlangchain-migrate contract``: run the contract parts no alive old replica needs.

For a post-deploy Job or hook: exit 0 when every contract part has run (or there is
none), 25 when some must wait (replicas of an older release still alive, or an expand
part not applied yet), so a Job's retries try again later.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from natlangchain_migrate.commands import PROG, env_setting, usage_error
from natlangchain_migrate.commands.shared import (
    add_database_flags,
    add_execution_flags,
    add_lock_flags,
    add_log_flags,
    database_dsn,
    log_format_problem,
    run_logged,
)
from natlangchain_migrate.errors import ConfigurationError, ExitCode

if TYPE_CHECKING:
    from natlangchain_migrate.contract_plan import ContractEntry
    from natlangchain_migrate.contracts import ContractReport


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def add_start_up_flags(parser: argparse.ArgumentParser) -> None:
    """The main command's ``--auto-contract`` and ``--replica-max-age``."""
    parser.add_argument(
        "--auto-contract",
        action="store_true",
        help="after applying, run the contract parts no alive old replica needs",
    )
    parser.add_argument(
        "--replica-max-age",
        default=env_setting("REPLICA_MAX_AGE"),
        metavar="DURATION",
        help="a replica whose heartbeat is older counts as gone (default 60s; with "
        "--auto-contract and --status)",
    )


def _max_age_setting(value: str) -> str:
    """How to name the max age in an error: the flag, or the variable it came from."""
    from_variable = value == env_setting("REPLICA_MAX_AGE")
    return "NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE" if from_variable else "--replica-max-age"


def start_up_problem(args: argparse.Namespace) -> str | None:
    """A bad NATLANGCHAIN_MIGRATE_AUTO_CONTRACT or replica max age, as a one-line error."""
    auto = env_setting("AUTO_CONTRACT", "") or ""
    if auto.lower() not in _TRUE | _FALSE:
        return (
            f"NATLANGCHAIN_MIGRATE_AUTO_CONTRACT={auto!r} is not one of: 1, 0, true, false, "
            "yes, no, on, off"
        )
    if args.replica_max_age:
        from natlangchain_migrate.contracts import parse_age

        try:
            parse_age(args.replica_max_age, _max_age_setting(args.replica_max_age))
        except ConfigurationError as error:
            return str(error)
    return None


def start_up_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``auto_contract`` and ``replica_max_age`` for the run (checked by start_up_problem)."""
    settings: dict[str, Any] = {
        "auto_contract": bool(args.auto_contract)
        or (env_setting("AUTO_CONTRACT", "") or "").lower() in _TRUE
    }
    if args.replica_max_age:
        from natlangchain_migrate.contracts import parse_age

        settings["replica_max_age"] = parse_age(args.replica_max_age, "--replica-max-age")
    return settings


def main(argv: list[str]) -> int:
    """Parse, run ``contract()``, print what ran and what waits, exit 0 or 25."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} contract",
        description="run the contract parts (NNN_name.contract.sql) whose expand part is "
        "applied and that no replica of an older release still needs, each exactly once "
        "under the advisory lock; exit 0 when none is left, 25 when some must wait",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run; change nothing"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run them even while replicas of an older release look alive (names them)",
    )
    parser.add_argument(
        "--replica-max-age",
        default=env_setting("REPLICA_MAX_AGE", "60s"),
        metavar="DURATION",
        help="a replica whose heartbeat is older than this counts as gone (default 60s)",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_database_flags(parser)
    add_lock_flags(
        parser,
        namespace_help="advisory lock key namespace: the migrations' "
        "(default natlangchain_migrate:<schema>)",
    )
    add_execution_flags(parser, each="contract part")
    add_log_flags(parser)
    args = parser.parse_args(argv)
    from natlangchain_migrate.contracts import parse_age

    problem = log_format_problem(args.log_format)
    try:
        max_age = parse_age(args.replica_max_age, _max_age_setting(args.replica_max_age))
    except ConfigurationError as error:
        problem = problem or str(error)
    if problem:
        return usage_error(problem)
    report, code = run_logged(args, lambda: _contract(args, max_age))
    if report is None:
        return code
    code = ExitCode.CONTRACT_WAITING if report.waiting else ExitCode.OK
    if args.json:
        _print_json(report, code)
    else:
        _print_text(report)
    return code


async def _contract(args: argparse.Namespace, max_age: float) -> ContractReport:
    from natlangchain_migrate.api import contract

    return await contract(
        await database_dsn(args.database_url),
        migrations_dir=args.migrations_dir,
        schema=args.schema,
        dry_run=args.dry_run,
        force=args.force,
        replica_max_age=max_age,
        lock_timeout=args.lock_wait,
        lock_namespace=args.lock_namespace,
        lock_mode=args.lock_mode or "session",
        wait=args.wait,
        pg_lock_timeout=args.pg_lock_timeout,
        statement_timeout=args.statement_timeout,
        lock_retries=args.lock_retries,
    )


def _print_text(report: ContractReport) -> None:
    from natlangchain_migrate.contracts import waiting_reason

    if report.dry_run and report.pending:
        print("Would apply, in order:")
        for result in report.pending:
            print(f"  {result.name}{' (forced)' if result.forced else ''}")
    for result in report.applied:
        forced = " (forced past alive old replicas)" if result.forced else ""
        print(f"Applied {result.name} in {result.duration_ms:.0f} ms{forced}")
    for entry in report.waiting:
        print(f"Waiting: {entry.name}: {waiting_reason(entry)}")
    if not (report.applied or report.pending or report.waiting):
        print("Nothing to contract: every contract part has run.")


def _print_json(report: ContractReport, code: int) -> None:
    print(
        json.dumps(
            {
                "exit_code": int(code),
                "dry_run": report.dry_run,
                "applied": [r._asdict() for r in report.applied],
                "would_apply": [r._asdict() for r in report.pending],
                "waiting": [
                    {
                        "version": entry.version,
                        "name": entry.name,
                        "state": entry.state.value,
                        "waiting_for": [r.describe() for r in entry.waiting_for],
                    }
                    for entry in report.waiting
                ],
            },
            indent=2,
        )
    )


_MARKS = {
    "APPLIED": "✓",
    "PENDING": "○",
    "WAITING": "○",
    "EXPAND_PENDING": "○",
    "CHANGED": "✗",
    "MISSING": "✗",
}


def print_contract_status(
    entries: list[ContractEntry], *, as_json: bool, before: list[dict[str, Any]] | None = None
) -> int:
    """``--status``'s contract section (nothing without contract parts); with ``as_json``,
    one object per part (``"contract": true``) after the ``before`` objects."""
    from natlangchain_migrate.contracts import waiting_reason
    from natlangchain_migrate.render import entry_fields

    if as_json:
        objects = list(before or [])
        for entry in entries:
            row = entry.row
            objects.append(
                {
                    "version": entry.version,
                    "contract": True,
                    **entry_fields(entry),
                    "forced": row.forced if row else None,
                    "waiting_for": [replica.describe() for replica in entry.waiting_for],
                }
            )
        print(json.dumps(objects, indent=2))
        return ExitCode.OK
    if not entries:
        return ExitCode.OK
    print(f"\nContract parts (run by `{PROG} contract` once no older replica is alive)")
    for entry in entries:
        state = entry.state.value
        note = ""
        if entry.row is not None and entry.row.forced:
            note = " (forced)"
        elif state in ("WAITING", "EXPAND_PENDING"):
            note = f" ({waiting_reason(entry)})"
        elif state == "MISSING":
            note = " (file gone: drift; restore it, or --repair forgets the row)"
        elif state == "CHANGED":
            note = " (edited since it ran: drift)"
        print(f"  {_MARKS[state]} {entry.name}: {state}{note}")
    return ExitCode.OK
