"""``natlangchain-migrate verify``: every down file really undoes its migration.

On a scratch database (created on the server of DATABASE_URL, or on the embedded
server without one, and always dropped): each migration is applied, undone, applied
again and undone, and the schema compared each time (see ``natlangchain_migrate.verify``).
Exit 0 when every down file restores the schema, 22 at the first one that does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from natlangchain_migrate.commands import usage_error
from natlangchain_migrate.commands.shared import (
    SCRATCH_URL_HELP,
    command_parser,
    parse_command,
    run_logged,
    scratch_server_dsn,
)
from natlangchain_migrate.errors import ExitCode, MigrateError, SchemaNotRestoredError

if TYPE_CHECKING:
    from natlangchain_migrate.verify import VerifyReport


def main(argv: list[str]) -> int:
    """Run the check; print what it found; exit 0, 22, or the failing step's own code."""
    parser = command_parser(
        "verify",
        "check on a scratch database that every down file restores the schema from before "
        "its migration, and that applying it again gives the same schema; exit 0 if so, "
        f"{int(ExitCode.SCHEMA_NOT_RESTORED)} at the first that does not",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as one object")
    args, problem = parse_command(parser, argv, url_help=SCRATCH_URL_HELP)
    if problem:
        return usage_error(problem)

    def on_error(error: MigrateError) -> None:
        if isinstance(error, SchemaNotRestoredError):
            _print_failure(error, as_json=args.json)
        elif args.json:
            from natlangchain_migrate.dsn import scrub

            _print_json(error.exit_code, error=scrub(str(error), args.database_url))

    report, code = run_logged(
        args, lambda: _verify(args), on_error=on_error, scratch_command="verify"
    )
    if report is None:
        return code
    _print_success(report, as_json=args.json)
    return ExitCode.OK


async def _verify(args: argparse.Namespace) -> VerifyReport:
    from natlangchain_migrate.migrator import Migrator

    server_dsn = await scratch_server_dsn(args.database_url)
    migrator = Migrator(
        migrations_dir=args.migrations_dir, schema=args.schema, connect_wait=args.wait
    )
    return await migrator.verify(server_dsn=server_dsn)


def _print_success(report: VerifyReport, *, as_json: bool) -> None:
    if as_json:
        _print_json(
            ExitCode.OK,
            scratch_database=report.scratch_database,
            verified=[item._asdict() for item in report.verified],
            **({"baseline": report.baseline} if report.baseline else {}),
        )
        return
    for item in report.verified:
        print(f"✓ {item.name}: down restores the schema before it; up again gives the same")
    if report.baseline:
        print(f"✓ {report.baseline}: gives the schema that replaying the versions it covers gives")
    count = len(report.verified)
    print(
        f"Verified {count} {'migration' if count == 1 else 'migrations'} on scratch database "
        f"{report.scratch_database} (dropped): every down file restores the schema."
    )


def _print_failure(error: SchemaNotRestoredError, *, as_json: bool) -> None:
    if as_json:
        _print_json(
            error.exit_code,
            verified=error.verified,
            failure={
                "version": error.version,
                "name": error.name,
                "step": error.step,
                "file": error.file,
                "message": str(error),
                "diff": error.diff,
            },
        )
        return
    print(f"✗ {error.name} ({error.step}): {error.summary}")
    if error.diff:
        print(error.diff, end="")


def _print_json(code: int, **fields: Any) -> None:
    outcome: dict[str, Any] = {"ok": code == ExitCode.OK, "exit_code": int(code)}
    print(json.dumps(outcome | fields, indent=2))
    sys.stdout.flush()
