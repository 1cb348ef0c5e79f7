"""Subcommands (``natlangchain-migrate NAME ...``), one module each.

The main command (apply, ``--status``, ``--check``, ...) keeps the seed
``migrate.py``'s flag interface in ``cli.py``. Everything else is a word before
the flags: each module here has ``main(argv) -> exit code`` and is imported only
when its word is given, so the apply path pays nothing for them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

PROG = "natlangchain-migrate"
ENV = "NATLANGCHAIN_MIGRATE_"

# word -> (module under natlangchain_migrate.commands, one-line summary for --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "new": ("new", "create the next migration: new NAME [--repeatable] [--migrations-dir DIR]"),
    "adopt": ("adopt", "take over another tool's history: adopt --from TOOL [--dry-run]"),
    "baseline": ("baseline", "record versions up to N as applied without running them"),
    "baseline-file": (
        "baseline_file",
        "write NNN_name.baseline.sql, which a new database applies instead of replaying",
    ),
    "embedded": ("embedded", "manage the embedded PostgreSQL: embedded stop"),
    "version": ("version", "print the tool's version (also -V)"),
    "sum": ("sum", "write (or --check) migrations.sum, the checksum manifest"),
    "verify": ("verify", "check on a scratch database that every down file restores the schema"),
    "dump-schema": ("dump_schema", "the schema as deterministic SQL: dump-schema [PATH|-]"),
    "contract": ("contract", "run the contract parts no old replica needs: contract [--force]"),
    "fleet": ("fleet", "migrate every tenant schema or database: fleet --each-schema 'tenant_%'"),
    "lint": ("lint", "check migrations with squawk: lint [--all] [--json] [--migrations-dir DIR]"),
}


def env_setting(name: str, default: str | None = None) -> str | None:
    """A setting's environment variable, ``NATLANGCHAIN_MIGRATE_<name>``."""
    return os.environ.get(ENV + name, default)


def usage_error(message: str) -> int:
    """Print a one-line usage error the way argparse does, and return exit 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def find_command(word: str) -> Callable[[list[str]], int] | None:
    """The subcommand's ``main``, or None when ``word`` is not a subcommand."""
    entry = COMMANDS.get(word)
    if entry is None:
        return None
    module = importlib.import_module(f"natlangchain_migrate.commands.{entry[0]}")
    command: Callable[[list[str]], int] = module.main
    return command
