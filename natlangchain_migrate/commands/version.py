"""``natlangchain-migrate version`` (and ``-V``): which release is running.

``--version N`` belongs to the seed ``migrate.py``'s interface (apply up to N),
so the tool's own version is a word and a short flag instead.
"""

from __future__ import annotations

import argparse

from natlangchain_migrate.commands import PROG
from natlangchain_migrate.errors import ExitCode


def version_line() -> str:
    """``natlangchain-migrate 0.1.0 (asyncpg 0.30.0, Python 3.11.7)``.

    Imported here, not at the top: the main command's parser loads this module, and
    every start-up would otherwise pay for importlib.metadata.
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "unknown"

    return (
        f"{PROG} {of('natlangchain-migrate')} "
        f"(asyncpg {of('asyncpg')}, Python {platform.python_version()})"
    )


def main(argv: list[str]) -> int:
    """Print the version line."""
    argparse.ArgumentParser(prog=f"{PROG} version", description="print the version").parse_args(
        argv
    )
    print(version_line())
    return ExitCode.OK


class PrintVersion(argparse.Action):
    """``-V`` on the main command: print the version line and exit 0, like ``--version``
    does in most tools."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the tool's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(version_line())
        parser.exit(ExitCode.OK)
