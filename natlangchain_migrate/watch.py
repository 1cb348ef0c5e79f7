"""Watching a migration that runs long: a heartbeat, and from a second connection, who
blocks it and how far an index build has got.

The heartbeat (``migration_running`` every ``progress_interval`` seconds) needs no
connection, so an operator tailing the logs of a long ALTER sees it alive. The
second connection is opened only once a statement has run for a while, so fast
migrations never open it. Watching is a courtesy: if it cannot connect or query,
the migration goes on and ``watcher_unavailable`` is logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from natlangchain_migrate.connection import RunConnection
from natlangchain_migrate.errors import MigrateError
from natlangchain_migrate.events import log

_BLOCKERS_QUERY = """
SELECT pid, application_name, state, query_start::text AS query_start
FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1))
"""
_PROGRESS_QUERY = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = $1
"""


class Watcher:
    """Watches one attempt; ``blockers`` holds the sessions last seen blocking it."""

    def __init__(
        self,
        connection: RunConnection,
        *,
        pg_lock_timeout_s: float,
        progress_interval: float,
        index_name: str | None = None,
        migration: tuple[int, str, str] | None = None,
    ) -> None:
        self.connection = connection
        self.migration = migration
        self.index_name = index_name
        self.progress_interval = progress_interval
        # Look before lock_timeout fires, so a cancelled attempt can name its blockers.
        self.first_look = min(0.5, pg_lock_timeout_s / 2) if pg_lock_timeout_s > 0 else 0.5
        self.blockers: Sequence[dict[str, object]] = []

    async def watch(self, attempt: Callable[[], Awaitable[object]]) -> None:
        """Run ``attempt`` with the watcher beside it; the attempt's own error propagates.

        Plain asyncio tasks, not an anyio task group: this runs for every migration, and
        anyio's asyncio backend costs a process about 15 ms of imports on first use.
        """
        helpers = [asyncio.ensure_future(self._look())]
        if self.migration is not None:
            helpers.append(asyncio.ensure_future(self._heartbeat(self.migration)))
        try:
            await attempt()
        finally:
            for helper in helpers:
                helper.cancel()
            # Wait for them to end (each swallows its own errors), never for long.
            await asyncio.wait(helpers)

    async def _heartbeat(self, migration: tuple[int, str, str]) -> None:
        """Say every ``progress_interval`` seconds that the migration is still running."""
        version, name, file = migration
        started = time.monotonic()
        while True:
            await asyncio.sleep(self.progress_interval)
            log.info(
                "migration_running",
                version=version,
                name=name,
                file=file,
                elapsed_s=round(time.monotonic() - started, 1),
                blockers=list(self.blockers),
            )

    async def _look(self) -> None:
        await asyncio.sleep(self.first_look)
        try:
            await self._watch_with_second_connection()
        except (MigrateError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("watcher_unavailable", error=str(error))

    async def _watch_with_second_connection(self) -> None:
        pid = self.connection.pid
        async with self.connection.second_connection() as watcher:
            next_progress = time.monotonic() + self.progress_interval
            while True:
                rows = await watcher.fetch(_BLOCKERS_QUERY, pid)
                if rows:
                    self.blockers = [dict(row) for row in rows]
                if self.index_name is not None and time.monotonic() >= next_progress:
                    await self._report_progress(watcher, pid)
                    next_progress = time.monotonic() + self.progress_interval
                await asyncio.sleep(min(0.25, self.progress_interval))

    async def _report_progress(self, watcher: asyncpg.Connection, pid: int) -> None:
        row = await watcher.fetchrow(_PROGRESS_QUERY, pid)
        if row is not None:
            file = {"file": self.migration[2]} if self.migration is not None else {}
            log.info("index_build_progress", index=self.index_name, **file, **dict(row))
