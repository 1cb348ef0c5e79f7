"""``natlangchain-migrate adopt --from TOOL [--dry-run]``: take over another tool's history."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.commands import PROG, usage_error
from natlangchain_migrate.commands.shared import (
    command_parser,
    migrator_from_flags,
    parse_command,
    run_logged,
)
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.foreign import TOOLS

if TYPE_CHECKING:
    from natlangchain_migrate.adopt import AdoptReport


def main(argv: list[str]) -> int:
    """Record what TOOL applied in our ledger (with checksums); run no migration."""
    parser = command_parser(
        "adopt",
        "record what another tool applied in this runner's ledger, with the files' "
        "checksums, running nothing and leaving that tool's table as it is",
    )
    parser.add_argument("--from", dest="tool", required=True, choices=TOOLS, metavar="TOOL")
    parser.add_argument("--dry-run", action="store_true", help="say what would be recorded")
    parser.add_argument(
        "--export-from",
        type=Path,
        metavar="ALEMBIC_INI",
        help="with --from alembic: write each revision's SQL (alembic's offline mode) into "
        "--migrations-dir as NNN_<revision>_<message>.sql and .down.sql, touching no database",
    )
    args, problem = parse_command(parser, argv, lock_wait=True)
    if problem:
        return usage_error(problem)
    if args.export_from is not None:
        return _export(args)
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


def _export(args: argparse.Namespace) -> int:
    """alembic's revisions as files (alembic_export.py); the database is not touched."""
    if args.tool != "alembic":
        return usage_error("--export-from is for --from alembic")
    if args.migrations_dir is None:
        return usage_error("--export-from needs --migrations-dir, the folder to write into")
    from natlangchain_migrate.alembic_export import export_alembic
    from natlangchain_migrate.errors import ConfigurationError

    try:
        written = export_alembic(args.export_from, args.migrations_dir)
    except ConfigurationError as error:
        return usage_error(str(error))
    print(
        f"Exported {len(written) // 2} alembic revision(s) into {args.migrations_dir}; "
        f"adopt them with: {PROG} adopt --from alembic --migrations-dir {args.migrations_dir}"
    )
    return ExitCode.OK


async def _adopt(args: argparse.Namespace) -> AdoptReport:
    from natlangchain_migrate.adopt import adopt

    migrator = await migrator_from_flags(args)
    return await adopt(migrator.options, args.tool, dry_run=args.dry_run)
