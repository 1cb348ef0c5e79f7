"""``natlangchain-migrate new NAME``: write the next-numbered migration pair; with
``--repeatable``, an ``R__name.sql`` file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from natlangchain_migrate.commands import PROG, env_setting, usage_error
from natlangchain_migrate.errors import ConfigurationError, ExitCode


def main(argv: list[str]) -> int:
    """Create ``NNN_name.sql`` and its down file; print their paths."""
    from natlangchain_migrate.discovery import shipped_migrations_dir
    from natlangchain_migrate.scaffold import new_migration, new_repeatable

    parser = argparse.ArgumentParser(prog=f"{PROG} new", description="create the next migration")
    parser.add_argument("name", help="lowercase_with_underscores, e.g. add_user_email")
    parser.add_argument("--migrations-dir", type=Path, default=env_setting("DIR"), metavar="DIR")
    parser.add_argument(
        "--repeatable",
        action="store_true",
        help="write R__name.sql, re-applied whenever it changes (views, functions)",
    )
    args = parser.parse_args(argv)
    directory = args.migrations_dir
    if directory is None:
        shipped = Path(str(shipped_migrations_dir()))
        if "site-packages" in shipped.parts or not os.access(shipped, os.W_OK):
            return usage_error(
                "pass --migrations-dir DIR (the shipped folder is installed read-only)"
            )
        directory = shipped
    try:
        create = new_repeatable if args.repeatable else new_migration
        for path in create(directory, args.name):
            print(path)
    except ConfigurationError as error:
        return usage_error(str(error))
    except OSError as error:  # a folder the user may not write, a full disk
        return usage_error(
            f"cannot write in {directory}: {error.strerror or error}; check that folder's "
            "permissions (or pass another --migrations-dir)"
        )
    return ExitCode.OK
