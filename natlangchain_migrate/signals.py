"""Stopping cleanly on SIGTERM and SIGINT, as a container's PID 1 or a terminal's job.

Python's default leaves SIGTERM fatal and abrupt (and, for PID 1, ignored by
the kernel), and SIGINT a KeyboardInterrupt wherever it lands. Here either one
cancels the run's task instead: asyncpg sends the server a cancel request for
the running statement, the migration's transaction is rolled back, the
advisory lock is released (each step bounded by ``connection.CLEANUP_S``), and
the CLI exits 143 (SIGTERM) or 130 (SIGINT) after one ``run_interrupted`` event.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

from natlangchain_migrate.errors import ExitCode, StoppedBySignalError

T = TypeVar("T")

_EXIT_CODES = {signal.SIGTERM: ExitCode.TERMINATED, signal.SIGINT: ExitCode.INTERRUPTED}


async def stop_on_signals(work: Awaitable[T]) -> T:
    """Await ``work``; on SIGTERM or SIGINT cancel it and raise StoppedBySignalError.

    A second signal while cleaning up is ignored: the cleanup is already bounded.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if not received:
            received.append(signum)
            task.cancel()

    # What was there before (the entry point's exit-at-once handler): put back afterwards,
    # for asyncio's removal leaves the default, and a SIGTERM between the run's end and
    # the process's would kill it by signal instead of exiting 143.
    previous = {signum: signal.getsignal(signum) for signum in _EXIT_CODES}
    for signum in _EXIT_CODES:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        name = received[0].name
        raise StoppedBySignalError(
            f"stopped by {name}: the running migration, if any, was cancelled on the server "
            "and rolled back, and the lock released; what committed before it stays applied, "
            "and the next run goes on from there",
            exit_code=_EXIT_CODES[received[0]],
        ) from None
    finally:
        for signum in _EXIT_CODES:
            loop.remove_signal_handler(signum)
            handler = previous[signum]
            if handler is not None:
                signal.signal(signum, handler)
