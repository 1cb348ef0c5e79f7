"""``natlangchain-migrate embedded stop``: stop the embedded PostgreSQL."""

from __future__ import annotations

import argparse

from natlangchain_migrate.commands import PROG, usage_error
from natlangchain_migrate.errors import ConfigurationError, ExitCode


def main(argv: list[str]) -> int:
    """Stop the server the main command started when no DATABASE_URL was set."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} embedded",
        description="manage the embedded PostgreSQL (data in NATLANGCHAIN_MIGRATE_EMBEDDED_DIR)",
    )
    parser.add_argument("action", choices=["stop"], help="stop: fast shutdown of the server")
    parser.parse_args(argv)
    from natlangchain_migrate.embedded import stop_embedded_server

    try:
        print(stop_embedded_server())
    except ConfigurationError as error:
        return usage_error(str(error))
    return ExitCode.OK
