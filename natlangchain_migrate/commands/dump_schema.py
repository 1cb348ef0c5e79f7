"""``natlangchain-migrate dump-schema [PATH|-]``: the schema as deterministic SQL.

Sorted by name, without owners, privileges or data, so that the file committed beside
the migrations shows in a pull request exactly what a migration changed (dbmate's
``schema.sql``). Written whole or not at all (a temporary file, renamed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from natlangchain_migrate.commands import ENV, PROG, env_setting, usage_error
from natlangchain_migrate.errors import ExitCode, MigrateError, StoppedBySignalError
from natlangchain_migrate.logs import LOG_FORMATS
from natlangchain_migrate.schema_dump import unwritable_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} dump-schema",
        description="print or write the database's schema as deterministic SQL",
    )
    parser.add_argument(
        "path", nargs="?", default="-", metavar="PATH", help="file to write; - (default): stdout"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL (default: DATABASE_URL, else the embedded server)",
    )
    parser.add_argument(
        "--schema",
        default=env_setting("SCHEMA", "public"),
        help="the schema whose schema_migrations ledger is left out (default public)",
    )
    parser.add_argument("--wait", type=float, default=env_setting("WAIT", "0"), metavar="SECONDS")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=env_setting("LOG_FORMAT"))
    parser.add_argument("--traceback", action="store_true", help="print tracebacks on errors")
    return parser


def main(argv: list[str]) -> int:
    """Describe the schema; print it or write it to PATH."""
    args = _parser().parse_args(argv)
    if args.log_format and args.log_format not in LOG_FORMATS:
        return usage_error(f"{ENV}LOG_FORMAT={args.log_format!r} is not one of: json, console")
    path = None if args.path == "-" else Path(args.path).expanduser()
    problem = unwritable_folder(path) if path is not None else None
    if problem:
        return usage_error(f"dump-schema {args.path}: {problem}")
    from natlangchain_migrate.cli import _fail
    from natlangchain_migrate.dsn import secrets_of
    from natlangchain_migrate.logs import configure_logging
    from natlangchain_migrate.schema_dump import write_schema
    from natlangchain_migrate.signals import stop_on_signals

    configure_logging(args.log_format, secrets=secrets_of(args.database_url))
    try:
        text = asyncio.run(stop_on_signals(_describe(args)))
        if path is None:
            sys.stdout.write(text)
        else:
            write_schema(path, text)
    except StoppedBySignalError as error:
        return _fail(args, error, error.exit_code)
    except MigrateError as error:
        return _fail(args, error, error.exit_code)
    except Exception as error:  # a bug: still one line, still no password
        return _fail(args, error, ExitCode.INTERNAL)
    return ExitCode.OK


async def _describe(args: argparse.Namespace) -> str:
    from natlangchain_migrate.connection import resolve_dsn
    from natlangchain_migrate.schema_dump import dump_schema

    if args.database_url is None:
        from natlangchain_migrate.cli import _embedded_dsn

        dsn = await _embedded_dsn(announce=False)
    else:
        dsn = resolve_dsn(args.database_url)
    return await dump_schema(dsn, schema=args.schema, wait=args.wait)
