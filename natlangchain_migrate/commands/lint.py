"""``natlangchain-migrate lint``: check migrations with squawk before they run.

With a database (``--database-url`` or ``DATABASE_URL``) it lints what is
pending there, read from the ledger without a lock or a write; without one, or
with ``--all``, every file. Contract parts (``NNN_name.contract.sql``) are linted
too, under the contract rules (lint_releases.py). Exit 0 when clean, 20 when
something was found, 21 when squawk is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.commands import PROG, env_setting
from natlangchain_migrate.commands.shared import add_database_flags
from natlangchain_migrate.errors import ExitCode, MigrateError

if TYPE_CHECKING:
    from natlangchain_migrate.discovery import Migration
    from natlangchain_migrate.lint import Finding
    from natlangchain_migrate.migrator import Migrator


def main(argv: list[str]) -> int:
    """Lint the chosen migrations; print one line per finding (or JSON); exit 0, 20 or 21."""
    args = _parser().parse_args(argv)
    from natlangchain_migrate.dsn import scrub

    try:
        return _lint(args)
    except MigrateError as raised:
        from natlangchain_migrate.commands.shared import with_adopt_command

        error = with_adopt_command(raised, args)
        message = scrub(str(error), args.database_url).replace("\n", " ")
        print(f"{PROG} lint: error: {message}", file=sys.stderr)
        return error.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} lint",
        description="Lint migrations with squawk, as the runner runs them. With a database "
        "URL, the migrations pending there; without one, or with --all, every file. Rules "
        "and PostgreSQL version: [tool.natlangchain-migrate] lint.exclude and lint.pg-version "
        "in pyproject.toml; per file: -- natlangchain: lint-ignore RULE REASON; per "
        "statement: -- squawk-ignore RULE. Expand parts (NNN_name.sql) and contract parts "
        "(NNN_name.contract.sql) also get the rules for two releases at once (README: "
        "Linting migrations).",
        epilog="exit codes: 0 clean, 2 bad configuration or directive, 3/7 database "
        "unreachable/refused, 20 problems found, 21 squawk missing or failed",
    )
    parser.add_argument("--all", action="store_true", help="every file, even ones applied")
    parser.add_argument("--json", action="store_true", help="print a JSON object for CI")
    add_database_flags(
        parser,
        url_help="read the ledger here to lint only pending migrations (default: DATABASE_URL)",
        schema_help="ledger schema",
    )
    return parser


def _lint(args: argparse.Namespace) -> int:
    from natlangchain_migrate.contract_plan import contract_part
    from natlangchain_migrate.discovery import load_migrations, shipped_migrations_dir
    from natlangchain_migrate.lint import lint_migrations, locate_squawk
    from natlangchain_migrate.lint_config import load_lint_config
    from natlangchain_migrate.repeatables import load_repeatables

    # Repeatables (R__name.sql) run in a transaction like any transactional file;
    # contract parts (NNN_name.contract.sql) too, under the contract rules.
    versioned = load_migrations(args.migrations_dir)
    migrations = versioned + load_repeatables(args.migrations_dir)
    contracts = [part for part in map(contract_part, versioned) if part is not None]
    folder = args.migrations_dir or Path(str(shipped_migrations_dir()))
    squawk = locate_squawk()
    config = load_lint_config([folder.absolute(), Path.cwd()])
    from_ledger = args.database_url is not None and not args.all
    if from_ledger:
        pending = _pending(args, args.migrations_dir, migrations, contracts)
        migrations, contracts = asyncio.run(pending)
    migrations = _in_version_order(migrations + contracts)
    findings = lint_migrations(migrations, config, shown_dir=_shown(folder), squawk=squawk)
    _report(findings, migrations, as_json=args.json, from_ledger=from_ledger)
    return ExitCode.LINT_FINDINGS if findings else ExitCode.OK


async def _pending(
    args: argparse.Namespace,
    folder: Path | None,
    migrations: list[Migration],
    contracts: list[Migration],
) -> tuple[list[Migration], list[Migration]]:
    """The files the next run would apply (or resume), and the contract parts not recorded
    in ``schema_contracts``, from the ledger: no lock, no write."""
    from natlangchain_migrate.dsn import secrets_of
    from natlangchain_migrate.logs import configure_logging
    from natlangchain_migrate.migrator import Migrator
    from natlangchain_migrate.plan import State

    configure_logging(env_setting("LOG_FORMAT"), secrets=secrets_of(args.database_url))
    migrator = Migrator(
        args.database_url,
        migrations_dir=folder,
        schema=args.schema,
        connect_wait=args.wait,
    )
    plan = await migrator.status()
    pending = {e.name for e in plan.entries if e.state in (State.PENDING, State.FAILED)}
    pending |= {e.name for e in plan.repeatables if e.state is State.PENDING}
    done = await _contracts_applied(migrator) if contracts else set()
    return (
        [m for m in migrations if m.name in pending],
        [c for c in contracts if c.version not in done],
    )


async def _contracts_applied(migrator: Migrator) -> set[int]:
    """The versions whose contract part ran (none before the contract ledger exists)."""
    from natlangchain_migrate.connection import open_run_connection
    from natlangchain_migrate.sqltext import quote_ident

    table = f"{quote_ident(migrator.options.schema)}.schema_contracts"
    async with open_run_connection(migrator.options) as connection:
        if await connection.conn.fetchval("SELECT to_regclass($1)::text", table) is None:
            return set()
        return {row[0] for row in await connection.conn.fetch(f"SELECT version FROM {table}")}


def _in_version_order(migrations: list[Migration]) -> list[Migration]:
    """Each contract part right after its expand part; repeatables last, as they run."""
    from natlangchain_migrate.lint_releases import is_contract_part
    from natlangchain_migrate.repeatables import is_repeatable

    return sorted(
        migrations,
        key=lambda m: (is_repeatable(m), m.version, is_contract_part(m.filename), m.name),
    )


def _shown(folder: Path) -> str:
    """The folder relative to the working directory when inside it, else as it is."""
    try:
        inside = folder.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(folder)
    return "" if inside == Path() else str(inside)


def _report(
    findings: list[Finding], checked: list[Migration], *, as_json: bool, from_ledger: bool
) -> None:
    if as_json:
        document = {
            "checked": [m.filename for m in checked],
            "findings": [finding._asdict() for finding in findings],
        }
        print(json.dumps(document, indent=2))
        return
    for finding in findings:
        print(finding)
    scope = "pending" if from_ledger else "checked"
    if not checked:
        print(
            "nothing to lint: no migration is pending (lint --all checks every file)",
            file=sys.stderr,
        )
    else:
        files = len({finding.file for finding in findings})
        print(
            f"{len(findings)} problem(s) in {files} of {len(checked)} {scope} file(s)",
            file=sys.stderr,
        )
