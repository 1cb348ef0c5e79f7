"""``natlangchain-migrate baseline N``: record versions up to N as applied, running nothing."""

from __future__ import annotations

import argparse

from natlangchain_migrate.commands import usage_error
from natlangchain_migrate.commands.shared import (
    command_parser,
    migrator_from_flags,
    parse_command,
    run_logged,
)
from natlangchain_migrate.errors import ExitCode


def main(argv: list[str]) -> int:
    """Record versions up to N with their files' checksums (applied_by 'baseline')."""
    parser = command_parser(
        "baseline",
        "record migrations up to version N as applied, with their checksums, without "
        "running them: for a database built by hand or by another tool",
    )
    parser.add_argument("n", type=int, metavar="N", help="the version the database matches")
    parser.add_argument(
        "--force",
        action="store_true",
        help="even when the ledger holds rows: add rows only for versions up to N that lack one",
    )
    args, problem = parse_command(parser, argv, lock_wait=True)
    if problem:
        return usage_error(problem)
    recorded, code = run_logged(args, lambda: _baseline(args))
    if recorded is None:
        return code
    print(f"Baseline: recorded {len(recorded)} migration(s) as applied, up to {args.n}")
    return ExitCode.OK


async def _baseline(args: argparse.Namespace) -> list[int]:
    migrator = await migrator_from_flags(args)
    return await migrator.baseline(args.n, force=args.force)
