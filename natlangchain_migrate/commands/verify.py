"""``natlangchain-migrate verify``: every down file really undoes its migration.

On a scratch database (created on the server of DATABASE_URL, or on the embedded
server without one, and always dropped): each migration is applied, undone, applied
again and undone, and the schema compared each time (see ``natlangchain_migrate.verify``).
Exit 0 when every down file restores the schema, 22 at the first one that does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natlangchain_migrate.commands import ENV, PROG, env_setting, usage_error
from natlangchain_migrate.errors import (
    ExitCode,
    MigrateError,
    SchemaNotRestoredError,
    StoppedBySignalError,
)
from natlangchain_migrate.logs import LOG_FORMATS

if TYPE_CHECKING:
    from natlangchain_migrate.verify import VerifyReport


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} verify",
        description="check on a scratch database that every down file restores the schema "
        "from before its migration, and that applying it again gives the same schema; "
        f"exit 0 if so, {int(ExitCode.SCHEMA_NOT_RESTORED)} at the first that does not",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="a database on the server to create the scratch database on (default: "
        "DATABASE_URL, else the embedded server); the role needs CREATEDB",
    )
    parser.add_argument("--migrations-dir", type=Path, default=env_setting("DIR"), metavar="DIR")
    parser.add_argument("--schema", default=env_setting("SCHEMA", "public"), help="target schema")
    parser.add_argument("--wait", type=float, default=env_setting("WAIT", "0"), metavar="SECONDS")
    parser.add_argument("--json", action="store_true", help="print the outcome as one object")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=env_setting("LOG_FORMAT"))
    parser.add_argument("--traceback", action="store_true", help="print tracebacks on errors")
    return parser


def main(argv: list[str]) -> int:
    """Run the check; print what it found; exit 0, 22, or the failing step's own code."""
    args = _parser().parse_args(argv)
    if args.log_format and args.log_format not in LOG_FORMATS:
        return usage_error(f"{ENV}LOG_FORMAT={args.log_format!r} is not one of: json, console")
    from natlangchain_migrate.cli import _fail
    from natlangchain_migrate.dsn import scrub, secrets_of
    from natlangchain_migrate.logs import configure_logging
    from natlangchain_migrate.signals import stop_on_signals

    configure_logging(args.log_format, secrets=secrets_of(args.database_url))
    try:
        report = asyncio.run(stop_on_signals(_verify(args)))
    except StoppedBySignalError as error:
        from natlangchain_migrate.events import log

        log.warning("run_interrupted", error=str(error), exit_code=int(error.exit_code))
        return error.exit_code
    except SchemaNotRestoredError as error:
        _print_failure(error, as_json=args.json)
        return _fail(args, error, error.exit_code)
    except MigrateError as error:
        if args.json:
            _print_json(error.exit_code, error=scrub(str(error), args.database_url))
        return _fail(args, error, error.exit_code)
    except Exception as error:  # a bug: still one line, still no password
        return _fail(args, error, ExitCode.INTERNAL)
    _print_success(report, as_json=args.json)
    return ExitCode.OK


async def _verify(args: argparse.Namespace) -> VerifyReport:
    from natlangchain_migrate.connection import resolve_dsn
    from natlangchain_migrate.settings import RunSettings
    from natlangchain_migrate.verify import verify_down_files

    if args.database_url is None:
        from natlangchain_migrate import embedded

        server_dsn = await asyncio.to_thread(embedded.start_embedded_server)
    else:
        server_dsn = resolve_dsn(args.database_url)
    settings = RunSettings(
        migrations_dir=args.migrations_dir, schema=args.schema, connect_wait=args.wait
    )
    return await verify_down_files(settings, server_dsn=server_dsn)


def _print_success(report: VerifyReport, *, as_json: bool) -> None:
    if as_json:
        _print_json(
            ExitCode.OK,
            scratch_database=report.scratch_database,
            verified=[item._asdict() for item in report.verified],
        )
        return
    for item in report.verified:
        print(f"✓ {item.name}: down restores the schema before it; up again gives the same")
    print(
        f"Verified {len(report.verified)} migrations on scratch database "
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
