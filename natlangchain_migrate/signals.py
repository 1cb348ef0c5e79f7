"""Stopping cleanly on SIGTERM and SIGINT, as a container's PID 1 or a terminal's job.

Python's default leaves SIGTERM fatal and abrupt (and, for PID 1, ignored by
the kernel), and SIGINT a KeyboardInterrupt wherever it lands. Here either one
cancels the run's task instead: asyncpg sends the server a cancel request for
the running statement, the migration's transaction is rolled back, the
advisory lock is released (each step bounded by ``connection.CLEANUP_S``), and
the CLI exits 143 (SIGTERM) or 130 (SIGINT) after one ``run_interrupted`` event.

One step is let finish: a backfill's batch (short, about its target long) that
is running when SIGTERM arrives commits with its position, and the run stops
right after it, still 143. SIGINT, or a second signal during that batch,
cancels it at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from natlangchain_migrate.errors import ExitCode, StoppedBySignalError

T = TypeVar("T")

_EXIT_CODES = {signal.SIGTERM: ExitCode.TERMINATED, signal.SIGINT: ExitCode.INTERRUPTED}


class _Stop:
    """One run's stop: what was received, and whether a batch is being let finish."""

    def __init__(self) -> None:
        self.task: asyncio.Future[Any] | None = None
        self.received: signal.Signals | None = None
        self.finished_batch = False  # stopped after a batch that committed
        self._deferred = False
        self._cancelled = False
        self._finishing = False

    def on_signal(self, signum: signal.Signals) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and signum == signal.SIGTERM and self._finishing:
            self._deferred = True  # cancelled when the batch has committed
            return
        self._cancel()  # a second signal while cleaning up is ignored: it is bounded

    def _cancel(self) -> None:
        if not self._cancelled and self.task is not None:
            self._cancelled = True
            self.task.cancel()

    @contextmanager
    def finishing(self) -> Iterator[None]:
        self._finishing = True
        committed = False
        try:
            yield
            committed = True
        finally:
            self._finishing = False
            if self._deferred:
                self.finished_batch = committed
                self._cancel()


_CURRENT: contextvars.ContextVar[_Stop | None] = contextvars.ContextVar(
    "natlangchain_migrate_stop", default=None
)


@contextmanager
def batch_finishes_on_sigterm() -> Iterator[None]:
    """Around one backfill batch: a SIGTERM meanwhile stops the run after it commits
    (the task is cancelled as the block ends); outside the CLI, nothing."""
    stop = _CURRENT.get()
    if stop is None:
        yield
        return
    with stop.finishing():
        yield


async def stop_on_signals(work: Awaitable[T], *, scratch_command: str | None = None) -> T:
    """Await ``work``; on SIGTERM or SIGINT cancel it and raise StoppedBySignalError.

    A second signal while cleaning up is ignored: the cleanup is already bounded.
    ``scratch_command`` names a command that works only in scratch databases (verify,
    baseline-file): its message then says so, not that the next run goes on.
    """
    loop = asyncio.get_running_loop()
    stop = _Stop()
    token = _CURRENT.set(stop)  # the task copies the context: the backfill sees ``stop``
    try:
        task = asyncio.ensure_future(work)
    finally:
        _CURRENT.reset(token)
    stop.task = task

    # What was there before (the entry point's exit-at-once handler): put back afterwards,
    # for asyncio's removal leaves the default, and a SIGTERM between the run's end and
    # the process's would kill it by signal instead of exiting 143.
    previous = {signum: signal.getsignal(signum) for signum in _EXIT_CODES}
    for signum in _EXIT_CODES:
        loop.add_signal_handler(signum, stop.on_signal, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if stop.received is None:
            raise
        raise StoppedBySignalError(
            _message(
                stop.received.name,
                finished_batch=stop.finished_batch,
                scratch_command=scratch_command,
            ),
            exit_code=_EXIT_CODES[stop.received],
        ) from None
    finally:
        for signum in _EXIT_CODES:
            loop.remove_signal_handler(signum)
            handler = previous[signum]
            if handler is not None:
                signal.signal(signum, handler)


def _message(name: str, *, finished_batch: bool, scratch_command: str | None = None) -> str:
    if scratch_command is not None:
        return (
            f"stopped by {name}: {scratch_command} works only in a scratch database, which "
            "was dropped (a verify_scratch_left warning names it if it could not be); "
            "nothing in the target database changed"
        )
    if finished_batch:
        return (
            f"stopped by {name} after the backfill's batch in flight committed with its "
            "position; the lock was released, and the next run resumes the backfill there"
        )
    return (
        f"stopped by {name}: the running migration, if any, was cancelled on the server "
        "and rolled back, and the lock released; what committed before it stays applied, "
        "and the next run goes on from there"
    )
