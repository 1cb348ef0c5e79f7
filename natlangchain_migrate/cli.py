"""The command line: parse arguments and settings, call the library, print, exit.

It never repeats the run's flow: the flags become one ``Migrator`` (the shared ones are
defined in ``commands/shared.py``), every action is one call of its methods, and what
is printed is ``render.py``'s. Errors print as one line (the cause chain with
``--traceback``) and exit with the code of their class, listed in ``--help`` and
README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from natlangchain_migrate import libpq
from natlangchain_migrate.commands import COMMANDS, ENV, PROG, env_setting, find_command
from natlangchain_migrate.commands.contract import (
    add_start_up_flags,
    start_up_problem,
    start_up_settings,
)
from natlangchain_migrate.commands.shared import (
    add_database_flags,
    add_execution_flags,
    add_lock_flags,
    add_log_flags,
    embedded_dsn,
    execution_options,
    lock_mode_problem,
    lock_options,
    log_format_problem,
    run_logged,
)
from natlangchain_migrate.commands.version import PrintVersion
from natlangchain_migrate.errors import (
    ExitCode,
)
from natlangchain_migrate.events import log
from natlangchain_migrate.migrator import Migrator

_SETTINGS = {
    "DIR": "--migrations-dir",
    "SCHEMA": "--schema",
    "LOCK_TIMEOUT": "--lock-timeout",
    "LOCK_NAMESPACE": "--lock-namespace",
    "LOCK_MODE": "--lock-mode",
    "WAIT": "--wait",
    "PG_LOCK_TIMEOUT": "--pg-lock-timeout",
    "STATEMENT_TIMEOUT": "--statement-timeout",
    "LOCK_RETRIES": "--lock-retries",
    "STRICT_ORDER": "--strict-order (1/true/yes/on)",
    "REFUSE_FUTURE": "--refuse-future (1/true/yes/on)",
    "AUTO_CONTRACT": "--auto-contract (1/true/yes/on)",
    "REPLICA_MAX_AGE": "--replica-max-age (also for the contract command)",
    "LOG_FORMAT": "--log-format",
    "DUMP_SCHEMA": "--dump-schema (when applying or rolling back)",
    "EMBEDDED_DIR": "(data directory of the embedded PostgreSQL)",
}
_EXIT_MEANINGS = {
    ExitCode.OK: "success (--check: up to date)",
    ExitCode.MIGRATION_FAILED: "a migration's file failed (rolled back, or journalled)",
    ExitCode.USAGE: "bad usage or configuration (flags, URL, files, directives)",
    ExitCode.UNREACHABLE: "database unreachable (after --wait)",
    ExitCode.LOCK_TIMEOUT: "timed out waiting for another runner's lock",
    ExitCode.DRIFT: "an applied migration's file changed or is gone (--refuse-future: "
    "the database holds versions above the newest file)",
    ExitCode.PREREQUISITE: "a required extension (pgvector) is missing",
    ExitCode.CONNECTION_REJECTED: "wrong password, unknown database or role",
    ExitCode.READ_ONLY: "the server refuses writes (standby, or read-only database/role)",
    ExitCode.LOCK_RETRIES_EXHAUSTED: "a migration kept hitting lock_timeout",
    ExitCode.CHECK_PENDING: "--check: migrations are pending",
    ExitCode.CHECK_DRIFT: "--check: drift (changed or missing files)",
    ExitCode.CHECK_FAILED: "--check: a no-transaction migration failed part-way",
    ExitCode.LOCK_LOST: "the advisory lock was lost while held (see --lock-mode)",
    ExitCode.PRIVILEGE: "the role lacks a privilege; the message names the GRANT",
    ExitCode.SERVER: "the server could not do it (disk, memory, I/O): not the file",
    ExitCode.SERVER_SETTING: "a server setting or an operator stopped it (timeouts, cancel)",
    ExitCode.CONFLICT: "another session got in the way (deadlock, serialization): run again",
    ExitCode.LINT_FINDINGS: "lint: squawk found problems in the migrations it checked",
    ExitCode.SQUAWK_UNAVAILABLE: "lint: squawk is not installed (the [lint] extra) or failed",
    ExitCode.SCHEMA_NOT_RESTORED: "verify: a down file does not restore the schema",
    ExitCode.OUT_OF_ORDER: "--strict-order: a pending version is below the highest applied",
    ExitCode.BASELINE_REFUSED: "baseline: the ledger already holds rows (see --force)",
    ExitCode.CONTRACT_WAITING: "contract: a contract part must wait (old replicas alive)",
    ExitCode.FLEET_FAILED: "fleet: some targets failed (each rolled back); the rest were migrated",
    ExitCode.FLEET_STOPPED: "fleet: the rollout stopped early (canary failed, --max-failures)",
    ExitCode.INTERNAL: "an unexpected error (a bug: please report it, with --traceback)",
    ExitCode.INTERRUPTED: "stopped by SIGINT (rolled back, lock released)",
    ExitCode.TERMINATED: "stopped by SIGTERM (rolled back, lock released)",
}
_EPILOG = (
    "environment variables (a flag wins over its variable):\n"
    f"  {'DATABASE_URL':<38} --database-url; with neither, PGHOST/PGPORT/PGDATABASE/\n"
    f"  {'':<38} PGUSER/PGPASSWORD (libpq's), else the embedded PostgreSQL\n"
    + "".join(f"  {ENV + name:<38} {flag}\n" for name, flag in _SETTINGS.items())
    + "\nexit codes:\n"
    + "".join(f"  {code.value:<3} {meaning}\n" for code, meaning in _EXIT_MEANINGS.items())
    + "\ncommands (each with its own --help):\n"
    + "".join(f"  {word:<12} {summary}\n" for word, (_, summary) in COMMANDS.items())
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, sized without ``import shutil``: argparse builds a formatter
    for every flag it adds, and shutil (with bz2 and lzma) costs each start-up ~2 ms."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            try:
                columns = int(os.environ.get("COLUMNS", "")) or 0
            except ValueError:
                columns = 0
            if not columns:
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (AttributeError, ValueError, OSError):
                    columns = 80
            width = columns - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def build_parser() -> argparse.ArgumentParser:
    """The main parser; every setting also has an environment variable."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Apply NatLangChain's PostgreSQL migrations: advisory-locked, each exactly "
        "once, each all-or-nothing. With no action flag, applies everything pending.",
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="show every migration's state")
    action.add_argument(
        "--check",
        action="store_true",
        help="read-only, lock-free: exit 0 if up to date, else 10 pending, 11 drift, 12 failed",
    )
    action.add_argument(
        "--rollback",
        action="store_true",
        help="undo the last applied migration with its down file (else remove its record only)",
    )
    action.add_argument(
        "--repair",
        action="store_true",
        help="record the files' current checksums for applied migrations (runs no SQL)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run; change nothing"
    )
    parser.add_argument("--version", type=int, metavar="N", help="apply up to version N")
    parser.add_argument(
        "--skip",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="leave version N out (repeatable); a later run without it applies it",
    )
    parser.add_argument(
        "--steps", type=int, metavar="K", help="with --rollback: undo the last K migrations"
    )
    parser.add_argument(
        "--to",
        type=int,
        metavar="N",
        help="with --rollback: undo every migration above version N, newest first (0: all)",
    )
    parser.add_argument(
        "--json", action="store_true", help="--status, --check or --dry-run as JSON"
    )
    add_database_flags(parser)
    add_lock_flags(parser)
    add_execution_flags(parser)
    parser.add_argument(
        "--strict-order",
        action="store_true",
        help="refuse to apply a version lower than the highest applied one (default: apply it)",
    )
    add_start_up_flags(parser)
    parser.add_argument(
        "--refuse-future",
        action="store_true",
        help="refuse (exit 5) versions applied above the newest file, and repeatables "
        "applied, by a newer release (default: warn with future_migrations and go on)",
    )
    parser.add_argument(
        "--dump-schema",
        metavar="PATH",
        help="after a successful apply or rollback, write the schema as deterministic SQL "
        "to PATH (as the dump-schema command does)",
    )
    parser.add_argument("-V", action=PrintVersion, dest="print_version")
    add_log_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m natlangchain_migrate``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list:
        command = find_command(args_list[0])
        if command is not None:
            return command(args_list[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(args_list)
    if unknown:
        misplaced = next((word for word in unknown if word in COMMANDS), None)
        hint = (
            f"; '{misplaced}' is a command: put it first ({PROG} {misplaced} [options])"
            if misplaced
            else ""
        )
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    problem = _combination_problem(args) or _setting_problem(args)
    if problem:
        parser.error(problem)  # exit 2, argparse's usage line first
    code, failed = run_logged(args, lambda: _run(args))
    return failed if code is None else code


def _setting_problem(args: argparse.Namespace) -> str | None:
    """argparse checks a flag's choices but not a default taken from a variable."""
    dump_path = _dump_path(args)
    if dump_path is not None:
        from natlangchain_migrate.schema_dump import unwritable_folder

        problem = unwritable_folder(dump_path)
        if problem:
            given = "--dump-schema" if args.dump_schema else f"{ENV}DUMP_SCHEMA"
            return f"{given} {dump_path}: {problem}"
    problem = log_format_problem(args.log_format) or lock_mode_problem(args.lock_mode)
    if problem:
        return problem
    for name in ("STRICT_ORDER", "REFUSE_FUTURE"):
        value = env_setting(name, "") or ""
        if value.lower() not in _TRUE | _FALSE:
            return f"{ENV}{name}={value!r} is not one of: 1, 0, true, false, yes, no, on, off"
    return start_up_problem(args)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _strict_order(args: argparse.Namespace) -> bool:
    """--strict-order, or its variable (checked by _setting_problem)."""
    return bool(args.strict_order) or (env_setting("STRICT_ORDER", "") or "").lower() in _TRUE


def _refuse_future(args: argparse.Namespace) -> bool:
    """--refuse-future, or its variable (checked by _setting_problem)."""
    return bool(args.refuse_future) or (env_setting("REFUSE_FUTURE", "") or "").lower() in _TRUE


def _combination_problem(args: argparse.Namespace) -> str | None:
    """Flags that cannot go together are refused, never silently ignored."""
    action = next(
        (name for name in ("status", "check", "rollback", "repair") if getattr(args, name)),
        "apply",
    )
    allowed = {
        "dry_run": {"apply", "rollback"},
        "json": {"status", "check", "apply", "rollback"},
        "version": {"apply"},
        "skip": {"apply", "status", "check"},
        "strict_order": {"apply"},
        "refuse_future": {"apply"},
        "auto_contract": {"apply"},
        "steps": {"rollback"},
        "to": {"rollback"},
    }
    flag = {
        "dry_run": "--dry-run",
        "json": "--json",
        "version": "--version",
        "skip": "--skip",
        "strict_order": "--strict-order",
        "refuse_future": "--refuse-future",
        "auto_contract": "--auto-contract",
    }
    for name, actions in allowed.items():
        if getattr(args, name) and action not in actions:
            if name == "version" and action == "rollback":
                return (
                    "--rollback --version N: use --rollback --to N to undo every migration "
                    "above version N (or --steps K for the last K)"
                )
            given = flag.get(name, f"--{name}")
            where = "applying" if action == "apply" else f"--{action}"
            return f"{given} does not go with {where}"
    if args.json and action in ("apply", "rollback") and not args.dry_run:
        return "--json goes with --status, --check or --dry-run"
    if args.steps is not None and args.to is not None:
        return "--steps and --to both say how far to roll back: give one"
    if args.dump_schema and (action not in ("apply", "rollback") or args.dry_run):
        where = "--dry-run" if args.dry_run else f"--{action}"
        return (
            "--dump-schema goes with applying and --rollback (it writes the schema after "
            f"them), not with {where}"
        )
    return None


async def _run(args: argparse.Namespace) -> int:
    """The actions; another tool's ledger met unasked becomes the adopt command for the
    folder given here in run_logged (commands/shared.py, with_adopt_command)."""
    applying = not (args.status or args.check or args.rollback or args.repair or args.dry_run)
    # Only an unset variable selects the embedded server; an empty one is refused when
    # connecting, like an empty dsn= in the library.
    dsn = args.database_url
    if dsn is None and not libpq.names_a_server():  # PGHOST & co. name a server too
        dsn = await embedded_dsn(announce=applying)
    migrator = Migrator(
        dsn,
        migrations_dir=args.migrations_dir,
        schema=args.schema,
        connect_wait=args.wait,
        strict_order=_strict_order(args),
        refuse_future=_refuse_future(args),
        **start_up_settings(args),
        lock=lock_options(args),
        execution=execution_options(args),
    )
    if args.status or args.check or args.rollback or args.repair:
        return await _other_action(args, migrator)
    report = await migrator.up(args.version, skip=args.skip, dry_run=args.dry_run)
    if args.dry_run:
        from natlangchain_migrate import render

        render.print_dry_run(report.pending, as_json=args.json)
    else:
        await _dump_schema_if_asked(args, migrator)
    return ExitCode.OK


def _dump_path(args: argparse.Namespace) -> Path | None:
    """--dump-schema PATH, else its variable; None for actions that change no schema."""
    if args.status or args.check or args.repair or args.dry_run:
        return None
    given = args.dump_schema or env_setting("DUMP_SCHEMA")
    return Path(given).expanduser() if given else None


async def _dump_schema_if_asked(args: argparse.Namespace, migrator: Migrator) -> None:
    """--dump-schema PATH (or its variable) after a successful apply or rollback."""
    path = _dump_path(args)
    if path is None:
        return
    from natlangchain_migrate.errors import ConfigurationError
    from natlangchain_migrate.schema_dump import write_schema

    text = await migrator.dump_schema()
    try:
        await asyncio.to_thread(write_schema, path, text)
    except ConfigurationError as error:
        raise ConfigurationError(
            f"--dump-schema: {error}; the run itself succeeded, so dump-schema PATH writes it"
        ) from None
    log.info("schema_dumped", path=str(path))


async def _other_action(args: argparse.Namespace, migrator: Migrator) -> int:
    """--status, --check, --rollback, --repair: one Migrator call each."""
    from natlangchain_migrate import render

    if args.rollback:
        steps = 1 if args.steps is None else args.steps
        undone = await migrator.rollback(steps=steps, to=args.to, dry_run=args.dry_run)
        if args.dry_run:
            render.print_rollback_plan(undone, as_json=args.json)
        else:
            await _dump_schema_if_asked(args, migrator)
        return ExitCode.OK
    if args.repair:
        await migrator.repair()
        return ExitCode.OK
    plan = await migrator.status(skip=args.skip)
    if args.status:
        from natlangchain_migrate.commands.contract import print_contract_status
        from natlangchain_migrate.contracts import contract_status

        contracts = await contract_status(migrator.options)
        if args.json:
            objects = render.status_objects(plan)
            return print_contract_status(contracts, as_json=True, before=objects)
        code = render.print_status(plan, as_json=False)
        print_contract_status(contracts, as_json=False)
        return code
    return render.print_check(plan, as_json=args.json)
