"""``natlangchain-migrate adopt --from TOOL [--dry-run]``: take over another tool's history."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from natlangchain_migrate.commands import PROG, usage_error
from natlangchain_migrate.commands.shared import (
    add_database_flags,
    add_lock_flags,
    add_log_flags,
    log_format_problem,
    migrator_from_flags,
    run_logged,
)
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.foreign import TOOLS

if TYPE_CHECKING:
    from natlangchain_migrate.adopt import AdoptReport


def main(argv: list[str]) -> int:
    """Record what TOOL applied in our ledger (with checksums); run no migration."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} adopt",
        description="record what another tool applied in this runner's ledger, with the "
        "files' checksums, running nothing and leaving that tool's table as it is",
    )
    parser.add_argument("--from", dest="tool", required=True, choices=TOOLS, metavar="TOOL")
    parser.add_argument("--dry-run", action="store_true", help="say what would be recorded")
    add_database_flags(parser)
    add_lock_flags(parser, namespace_and_mode=False)
    add_log_flags(parser)
    args = parser.parse_args(argv)
    problem = log_format_problem(args.log_format)
    if problem:
        return usage_error(problem)
    report, code = run_logged(args, lambda: _adopt(args))
    if report is None:
        return code
    verb = "would record" if report.dry_run else "recorded"
    newest = report.adopted[-1] if report.adopted else "none"
    print(
        f"Adopt from {report.tool}: {verb} {len(report.adopted)} migration(s) in "
        f"{report.table} (newest {newest}); {len(report.pending)} pending"
    )
    return ExitCode.OK


async def _adopt(args: argparse.Namespace) -> AdoptReport:
    from natlangchain_migrate.adopt import adopt

    migrator = await migrator_from_flags(args)
    return await adopt(migrator.options, args.tool, dry_run=args.dry_run)
