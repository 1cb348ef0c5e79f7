"""``natlangchain-migrate baseline N``: record versions up to N as applied, running nothing."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from natlangchain_migrate.commands import PROG, env_setting
from natlangchain_migrate.errors import ExitCode, MigrateError


def main(argv: list[str]) -> int:
    """Record versions up to N with their files' checksums (applied_by 'baseline')."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} baseline",
        description="record migrations up to version N as applied, with their checksums, "
        "without running them: for a database built by hand or by another tool",
    )
    parser.add_argument("n", type=int, metavar="N", help="the version the database matches")
    parser.add_argument(
        "--force",
        action="store_true",
        help="even when the ledger holds rows: add rows only for versions up to N that lack one",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL (default: DATABASE_URL, else the embedded server)",
    )
    parser.add_argument("--migrations-dir", type=Path, default=env_setting("DIR"), metavar="DIR")
    parser.add_argument("--schema", default=env_setting("SCHEMA", "public"))
    parser.add_argument(
        "--lock-timeout", type=float, default=env_setting("LOCK_TIMEOUT", "300"), metavar="S"
    )
    parser.add_argument("--wait", type=float, default=env_setting("WAIT", "0"), metavar="S")
    parser.add_argument("--log-format", default=env_setting("LOG_FORMAT"))
    parser.add_argument("--traceback", action="store_true", help="print tracebacks on errors")
    args = parser.parse_args(argv)

    from natlangchain_migrate.cli import _fail
    from natlangchain_migrate.dsn import secrets_of
    from natlangchain_migrate.logs import configure_logging

    configure_logging(args.log_format, secrets=secrets_of(args.database_url))
    try:
        recorded = asyncio.run(_baseline(args))
    except MigrateError as error:
        return _fail(args, error, error.exit_code)
    except Exception as error:  # still one line, still no password
        return _fail(args, error, ExitCode.INTERNAL)
    print(f"Baseline: recorded {len(recorded)} migration(s) as applied, up to {args.n}")
    return ExitCode.OK


async def _baseline(args: argparse.Namespace) -> list[int]:
    from natlangchain_migrate.cli import _embedded_dsn
    from natlangchain_migrate.operations import baseline

    dsn = args.database_url
    if dsn is None:
        dsn = await _embedded_dsn(announce=False)
    return await baseline(
        args.n,
        dsn,
        force=args.force,
        migrations_dir=args.migrations_dir,
        schema=args.schema,
        lock_timeout=args.lock_timeout,
        wait=args.wait,
    )
