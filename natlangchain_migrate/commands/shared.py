"""What every command that talks to a database shares: its connection, lock, execution
and log flags (each defined once), where the embedded server comes in, and one way to
run, fail and stop on signals.

The main command (``cli.py``) and each subcommand use these, so a flag, an exit code or
the "one line, never the password" rule has one home.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from natlangchain_migrate.commands import ENV, PROG, env_setting
from natlangchain_migrate.dsn import scrub, secrets_of
from natlangchain_migrate.errors import ExitCode, MigrateError, StoppedBySignalError
from natlangchain_migrate.events import log
from natlangchain_migrate.logs import LOG_FORMATS, configure_logging
from natlangchain_migrate.settings import (
    LOCK_MODES,
    ExecutionOptions,
    LockOptions,
    lock_mode_of,
)

if TYPE_CHECKING:
    from natlangchain_migrate.migrator import Migrator

T = TypeVar("T")

EMBEDDED_URL_HELP = "PostgreSQL URL (default: DATABASE_URL, else the embedded server)"
SCRATCH_URL_HELP = (
    "a database on the server to create the scratch database on (default: DATABASE_URL, "
    "else the embedded server); the role needs CREATEDB"
)


def add_database_flags(
    parser: argparse.ArgumentParser,
    *,
    url_help: str = EMBEDDED_URL_HELP,
    schema_help: str = "target schema",
    migrations_dir: bool = True,
) -> None:
    """``--database-url``, ``--migrations-dir``, ``--schema`` and ``--wait``, each with
    its environment variable."""
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL"), metavar="URL", help=url_help
    )
    if migrations_dir:
        parser.add_argument(
            "--migrations-dir",
            type=Path,
            default=env_setting("DIR"),
            metavar="DIR",
            help="folder of NNN_name.sql files (default: NatLangChain's shipped migrations)",
        )
    parser.add_argument("--schema", default=env_setting("SCHEMA", "public"), help=schema_help)
    parser.add_argument(
        "--wait",
        type=float,
        default=env_setting("WAIT", "0"),
        metavar="SECONDS",
        help="retry a server that is not up yet for up to SECONDS (default 0)",
    )


def add_lock_flags(
    parser: argparse.ArgumentParser,
    *,
    namespace_and_mode: bool = True,
    namespace_help: str = "advisory lock key namespace (default natlangchain_migrate:<schema>)",
) -> None:
    """``--lock-timeout`` (the wait for another runner's advisory lock, ``args.lock_wait``)
    and, unless told not to, ``--lock-namespace`` and ``--lock-mode``, with their
    variables."""
    parser.add_argument(
        "--lock-timeout",
        dest="lock_wait",
        type=float,
        default=env_setting("LOCK_TIMEOUT", "300"),
        metavar="SECONDS",
        help="how long to wait for another runner's lock (default 300)",
    )
    if not namespace_and_mode:
        return
    parser.add_argument(
        "--lock-namespace",
        default=env_setting("LOCK_NAMESPACE"),
        metavar="TEXT",
        help=namespace_help,
    )
    parser.add_argument(
        "--lock-mode",
        choices=LOCK_MODES,
        default=env_setting("LOCK_MODE", "session"),
        help="session (default) or transaction (through PgBouncer transaction pooling)",
    )


def add_execution_flags(parser: argparse.ArgumentParser, *, each: str = "migration") -> None:
    """How each migration file (or ``each`` other unit) runs, up or down:
    ``--pg-lock-timeout``, ``--statement-timeout`` and ``--lock-retries``, with their
    variables."""
    parser.add_argument(
        "--pg-lock-timeout",
        default=env_setting("PG_LOCK_TIMEOUT", "5s"),
        metavar="DURATION",
        help=f"PostgreSQL lock_timeout for each {each} (default 5s)",
    )
    parser.add_argument(
        "--statement-timeout",
        default=env_setting("STATEMENT_TIMEOUT"),
        metavar="DURATION",
        help=f"PostgreSQL statement_timeout for each {each} (default none)",
    )
    parser.add_argument(
        "--lock-retries",
        type=int,
        default=env_setting("LOCK_RETRIES", "5"),
        metavar="N",
        help=f"retries of a {each} cancelled by lock_timeout (default 5)",
    )


def lock_options(args: argparse.Namespace) -> LockOptions:
    """The advisory lock the flags of ``add_lock_flags`` describe."""
    return LockOptions(
        wait=args.lock_wait,
        namespace=getattr(args, "lock_namespace", None),
        mode=lock_mode_of(getattr(args, "lock_mode", None) or "session"),
    )


def execution_options(args: argparse.Namespace) -> ExecutionOptions:
    """How each file runs, from the flags of ``add_execution_flags``."""
    return ExecutionOptions(
        pg_lock_timeout=args.pg_lock_timeout,
        statement_timeout=args.statement_timeout,
        lock_retries=args.lock_retries,
    )


def lock_mode_problem(value: str | None) -> str | None:
    """argparse checks a flag's choices, not a default taken from the variable."""
    if value and value not in LOCK_MODES:  # an empty variable counts as unset
        return f"{ENV}LOCK_MODE={value!r} is not one of: {', '.join(LOCK_MODES)}"
    return None


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` (and its variable) and ``--traceback``."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=env_setting("LOG_FORMAT"),
        help="json or console (default: console on a terminal, json otherwise)",
    )
    parser.add_argument("--traceback", action="store_true", help="print tracebacks on errors")


def log_format_problem(value: str | None) -> str | None:
    """argparse checks a flag's choices, not a default taken from the variable."""
    if value and value not in LOG_FORMATS:  # an empty variable counts as unset
        return f"{ENV}LOG_FORMAT={value!r} is not one of: {', '.join(LOG_FORMATS)}"
    return None


def command_parser(word: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser, ``natlangchain-migrate WORD`` in its usage line."""
    return argparse.ArgumentParser(prog=f"{PROG} {word}", description=description)


def parse_command(
    parser: argparse.ArgumentParser,
    argv: list[str],
    *,
    lock_wait: bool = False,
    url_help: str = EMBEDDED_URL_HELP,
) -> tuple[argparse.Namespace, str | None]:
    """Add the flags a subcommand on one database shares (the database's, ``--lock-timeout``
    with ``lock_wait``, the log's), parse ``argv``, and return the arguments with what is
    wrong in them that argparse cannot see (None: nothing)."""
    add_database_flags(parser, url_help=url_help)
    if lock_wait:
        add_lock_flags(parser, namespace_and_mode=False)
    add_log_flags(parser)
    args = parser.parse_args(argv)
    return args, log_format_problem(args.log_format)


async def database_dsn(url: str | None) -> str:
    """The URL given, else DATABASE_URL; with neither, the embedded server's database."""
    from natlangchain_migrate import libpq

    if url is None and not libpq.names_a_server():
        return await embedded_dsn(announce=False)
    from natlangchain_migrate.connection import resolve_dsn

    return resolve_dsn(url)


async def scratch_server_dsn(url: str | None) -> str:
    """Where verify and baseline-file create their scratch database: the URL given, else
    DATABASE_URL; with neither, the embedded server (its admin database, no app database)."""
    from natlangchain_migrate import libpq

    if url is None and not libpq.names_a_server():
        from natlangchain_migrate import embedded

        server_dsn = await asyncio.to_thread(embedded.start_embedded_server)
        libpq.remember_source(server_dsn, "embedded server")
        return server_dsn
    from natlangchain_migrate.connection import resolve_dsn

    return resolve_dsn(url)


async def migrator_from_flags(args: argparse.Namespace) -> Migrator:
    """The ``Migrator`` of a subcommand's ``add_database_flags`` and ``add_lock_flags``."""
    from natlangchain_migrate.migrator import Migrator

    return Migrator(
        await database_dsn(args.database_url),
        migrations_dir=args.migrations_dir,
        schema=args.schema,
        connect_wait=args.wait,
        lock=lock_options(args),
    )


async def embedded_dsn(*, announce: bool) -> str:
    """Start (or reuse) the embedded PostgreSQL and its database; ``announce`` prints the
    ``DATABASE_URL=...`` line an applying run shows, so the API can connect to it."""
    from natlangchain_migrate import embedded

    admin_dsn = await asyncio.to_thread(embedded.start_embedded_server)
    dsn = await embedded.ensure_database(admin_dsn)
    from natlangchain_migrate import libpq

    libpq.remember_source(dsn, "embedded server")
    log.info("embedded_server_ready", dsn=dsn, data_dir=str(embedded.embedded_data_dir()))
    if announce:
        print(f"DATABASE_URL={dsn}", flush=True)
    return dsn


def run_logged(
    args: argparse.Namespace,
    work: Callable[[], Awaitable[T]],
    *,
    on_error: Callable[[MigrateError], None] | None = None,
    scratch_command: str | None = None,
) -> tuple[T | None, int]:
    """Configure the logs, run ``work`` stopping cleanly on SIGTERM/SIGINT, and turn any
    error into one ``run_failed`` line (the cause chain with ``--traceback``) and its exit
    code. Returns (the result, 0), or (None, the exit code). ``scratch_command``: the
    command works only in scratch databases, and a signal's message says so."""
    from natlangchain_migrate.signals import stop_on_signals

    configure_logging(args.log_format, secrets=secrets_of(args.database_url))
    try:
        stopping = stop_on_signals(work(), scratch_command=scratch_command)
        return asyncio.run(stopping), ExitCode.OK
    except StoppedBySignalError as error:
        log.warning("run_interrupted", error=str(error), exit_code=int(error.exit_code))
        return None, error.exit_code
    except MigrateError as raised:
        shown = with_adopt_command(raised, args)
        if on_error is not None:
            on_error(shown)
        return None, fail(args, shown, shown.exit_code)
    except Exception as error:  # anything else: still one line, still no password
        return None, fail(args, error, ExitCode.INTERNAL)


def with_adopt_command(error: MigrateError, args: argparse.Namespace) -> MigrateError:
    """Another tool's ledger met unasked: the adopt command for the folder (and schema)
    this command was given, not the shipped migrations'."""
    from natlangchain_migrate.errors import ConfigurationError, ForeignLedgerError

    if not isinstance(error, ForeignLedgerError):
        return error
    from natlangchain_migrate.foreign import ForeignLedger, adopt_advice

    folder = getattr(args, "migrations_dir", None)
    found = ForeignLedger(error.tool, error.table, error.found_in)
    advice = adopt_advice(found, error.schema, None if folder is None else str(folder))
    return ConfigurationError(advice)


def fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    """Log ``run_failed`` with the error on one line, scrubbed of the DSN's password."""
    text = scrub(one_line(error), args.database_url)
    log.error("run_failed", error=text, error_type=type(error).__name__, exit_code=int(code))
    if args.traceback:
        import traceback

        printed = "".join(traceback.format_exception(error))
        print(scrub(printed, args.database_url), file=sys.stderr, end="")
    return code


def one_line(error: BaseException) -> str:
    """The error and its causes, joined: 'what failed: because ...'."""
    parts = [str(error) or type(error).__name__]
    if not isinstance(error, MigrateError):  # ours already say what caused them
        cause = error.__cause__
        while cause is not None:
            parts.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__
    return " <- ".join(parts).replace("\n", " ")
