"""``natlangchain-migrate baseline-file [--up-to N] [--name NAME]``: write
``NNN_NAME.baseline.sql``, the schema after the versions up to N, that a new database
applies instead of replaying them (see ``natlangchain_migrate.baseline_files``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from natlangchain_migrate.commands import PROG, usage_error
from natlangchain_migrate.commands.shared import (
    SCRATCH_URL_HELP,
    command_parser,
    parse_command,
    run_logged,
    scratch_server_dsn,
)
from natlangchain_migrate.errors import ExitCode

if TYPE_CHECKING:
    from natlangchain_migrate.baseline_writer import WrittenBaseline


def main(argv: list[str]) -> int:
    """Replay the history on a scratch database and write its schema as a baseline file."""
    parser = command_parser(
        "baseline-file",
        "write NNN_NAME.baseline.sql into the migrations folder: the schema after every "
        "version up to N, replayed on a scratch database (created and dropped). A new "
        "database applies it instead of those versions; others ignore it. (baseline N, "
        "without -file, records versions as applied in a database instead.)",
    )
    parser.add_argument(
        "--up-to",
        type=int,
        metavar="N",
        help="the newest version it covers (default: the newest file)",
    )
    parser.add_argument(
        "--name", default="schema", help="NAME in NNN_NAME.baseline.sql (default: schema)"
    )
    args, problem = parse_command(parser, argv, url_help=SCRATCH_URL_HELP)
    if problem is None and args.migrations_dir is None:
        problem = "baseline-file writes into the migrations folder: give --migrations-dir DIR"
    if problem:
        return usage_error(problem)
    written, code = run_logged(args, lambda: _write(args), scratch_command="baseline-file")
    if written is None:
        return code
    print(
        f"Wrote {written.path} ({len(written.covers)} migrations, up to {written.version}); "
        f"check it with: {PROG} verify --migrations-dir {args.migrations_dir}"
    )
    return ExitCode.OK


async def _write(args: argparse.Namespace) -> WrittenBaseline:
    from natlangchain_migrate.migrator import Migrator

    server_dsn = await scratch_server_dsn(args.database_url)
    migrator = Migrator(
        migrations_dir=args.migrations_dir, schema=args.schema, connect_wait=args.wait
    )
    return await migrator.baseline_file(server_dsn=server_dsn, up_to=args.up_to, name=args.name)
