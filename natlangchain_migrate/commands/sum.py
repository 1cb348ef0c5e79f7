"""``natlangchain-migrate sum``: write or check the checksum manifest, ``migrations.sum``.

See ``natlangchain_migrate/manifest.py`` for what the manifest saves and what it leaves.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from natlangchain_migrate.commands import PROG, env_setting, usage_error
from natlangchain_migrate.errors import ConfigurationError, ExitCode


def main(argv: list[str]) -> int:
    """Write the manifest, or with ``--check`` say which files it gets wrong (exit 11)."""
    from natlangchain_migrate.discovery import shipped_migrations_dir
    from natlangchain_migrate.manifest import MANIFEST_NAME, stale_files, write_manifest

    parser = argparse.ArgumentParser(
        prog=f"{PROG} sum",
        description=f"write {MANIFEST_NAME}, the checksums an up-to-date start-up compares "
        "with the ledger instead of reading every file",
    )
    parser.add_argument("--migrations-dir", type=Path, default=env_setting("DIR"), metavar="DIR")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"write nothing; exit 11 if {MANIFEST_NAME} is missing or out of date (for CI)",
    )
    args = parser.parse_args(argv)
    folder = Path(str(args.migrations_dir or shipped_migrations_dir()))
    try:
        if args.check:
            if not (folder / MANIFEST_NAME).is_file():
                print(f"{folder / MANIFEST_NAME} is missing; write it with: {PROG} sum")
                return ExitCode.CHECK_DRIFT
            wrong = stale_files(folder)
            if wrong:
                print(
                    f"{folder / MANIFEST_NAME} is out of date for: {', '.join(wrong)}; "
                    f"regenerate it with: {PROG} sum --migrations-dir {shlex.quote(str(folder))}"
                )
                return ExitCode.CHECK_DRIFT
            print(f"{folder / MANIFEST_NAME} matches every file")
            return ExitCode.OK
        print(write_manifest(folder))
    except (ConfigurationError, OSError) as error:
        return usage_error(str(error))
    return ExitCode.OK
