"""The process entry point: signals first, then everything else.

Importing the CLI (asyncpg, anyio, structlog) takes tens of milliseconds, and a
SIGTERM that arrives meanwhile would find Python's default (death by signal,
or, for a container's PID 1, nothing at all). Nothing has touched the database
yet, so the right answer is to exit at once with the documented code; once the
run starts, ``signals.stop_on_signals`` takes over and cleans up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType


def _exit_now(signum: int, _frame: FrameType | None) -> None:
    # os._exit, not SystemExit: a signal that lands inside an import's weakref callback
    # would have SystemExit printed as "Exception ignored" and the run carry on. Nothing
    # holds a connection while this handler is installed (before the run, and after it,
    # when signals.stop_on_signals puts it back), so there is nothing to clean up.
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(128 + signum)


def main() -> int:
    """Entry point of the console script and ``python -m natlangchain_migrate``."""
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    from natlangchain_migrate.cli import main as run_cli

    return run_cli()


if __name__ == "__main__":
    sys.exit(main())
