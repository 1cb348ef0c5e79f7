"""``natlangchain-migrate dump-schema [PATH|-]``: the schema as deterministic SQL.

Sorted by name, without owners, privileges or data, so that the file committed beside
the migrations shows in a pull request exactly what a migration changed (dbmate's
``schema.sql``). Written whole or not at all (a temporary file, renamed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from natlangchain_migrate.commands import PROG, usage_error
from natlangchain_migrate.commands.shared import (
    add_database_flags,
    add_log_flags,
    database_dsn,
    log_format_problem,
    run_logged,
)
from natlangchain_migrate.schema_dump import unwritable_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} dump-schema",
        description="print or write the database's schema as deterministic SQL",
    )
    parser.add_argument(
        "path", nargs="?", default="-", metavar="PATH", help="file to write; - (default): stdout"
    )
    add_database_flags(
        parser,
        migrations_dir=False,
        schema_help="the schema whose schema_migrations ledger is left out (default public)",
    )
    add_log_flags(parser)
    return parser


def main(argv: list[str]) -> int:
    """Describe the schema; print it or write it to PATH."""
    args = _parser().parse_args(argv)
    path = None if args.path == "-" else Path(args.path).expanduser()
    problem = log_format_problem(args.log_format)
    if problem is None and path is not None:
        reason = unwritable_folder(path)
        problem = f"dump-schema {args.path}: {reason}" if reason else None
    if problem:
        return usage_error(problem)
    _, code = run_logged(args, lambda: _dump(args, path))
    return code


async def _dump(args: argparse.Namespace, path: Path | None) -> None:
    from natlangchain_migrate.migrator import Migrator
    from natlangchain_migrate.schema_dump import write_schema

    migrator = Migrator(
        await database_dsn(args.database_url), schema=args.schema, connect_wait=args.wait
    )
    text = await migrator.dump_schema()
    if path is None:
        sys.stdout.write(text)
    else:
        write_schema(path, text)
