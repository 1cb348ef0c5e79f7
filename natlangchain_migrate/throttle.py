"""Waiting before a backfill's batch while the server is busy.

Two signals, read in one query before each batch: the replication lag of the
standbys (``pg_stat_replication.replay_lag``, on a primary; a server without
standbys has none) and the sessions waiting for a lock on the backfill's table
(``pg_locks``: a lock not granted on the table, or a tuple lock on it, which a
session holds only while it waits for a row another transaction has locked).
While either is over its limit the backfill waits, polling with a backoff, and
says so in a ``backfill_throttled`` event at most every progress interval, so a
run that holds the migration lock while it waits is never silent about why. Past the
backfill's ``max-wait`` in a row it gives up (``GaveUp``), so that a table that never
quietens does not hold the migration lock, and the deploy, for ever.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import asyncpg

from natlangchain_migrate.events import log

FIRST_POLL_S = 0.02
MAX_POLL_S = 1.0

# One round trip. A tuple lock on the table is held by a session waiting for a row
# locked by another transaction (the first waiter holds it, the next ones wait for it);
# a lock not granted on the relation itself is a session waiting for the table (DDL,
# LOCK TABLE, or a writer queued behind them). pg_stat_replication shows lag and state
# only to roles with pg_read_all_stats (pg_monitor): a standby with a NULL state is one
# whose lag this role cannot see.
_READINGS = """
SELECT
  (SELECT max(extract(epoch FROM replay_lag))::float8 FROM pg_stat_replication) AS lag_s,
  (SELECT count(*) FILTER (WHERE state IS NULL) FROM pg_stat_replication) AS hidden,
  (SELECT count(DISTINCT pid) FROM pg_locks
    WHERE relation = $1 AND pid <> pg_backend_pid()
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (NOT granted OR locktype = 'tuple')) AS lock_waits
"""


class Limits(NamedTuple):
    """A backfill's limits; None turns one off. ``max_wait_s``: how long one wait before
    a batch may last."""

    max_lag_s: float | None
    max_lock_waits: int | None
    max_wait_s: float | None = None


class Over(NamedTuple):
    """Why a batch waits: which reading, its value and its limit."""

    reason: str  # "replication_lag" or "lock_waits"
    value: float
    limit: float


class GaveUp(Exception):
    """A wait before a batch lasted ``max_wait_s``: the reading still over its limit."""

    def __init__(self, over: Over, waited_s: float) -> None:
        super().__init__(over.reason)
        self.over = over
        self.waited_s = waited_s


class Throttle:
    """Waits before a batch while a reading is over its limit (``wait``)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        limits: Limits,
        *,
        table_oid: int,
        report_interval: float,
        fields: dict[str, object],
    ) -> None:
        self._conn = conn
        self._limits = limits
        self._table_oid = table_oid
        self._report_interval = report_interval
        self._fields = fields  # the migration's version and name, for the events
        self._warned_hidden = False

    async def over(self) -> Over | None:
        """The first reading over its limit, or None when a batch may run now."""
        if self._limits.max_lag_s is None and self._limits.max_lock_waits is None:
            return None
        row = await self._conn.fetchrow(_READINGS, self._table_oid)
        if row is None:  # never: the query returns one row
            return None
        if row["hidden"] and self._limits.max_lag_s is not None and not self._warned_hidden:
            self._warned_hidden = True
            log.warning(
                "backfill_lag_hidden",
                **self._fields,
                standbys=int(row["hidden"]),
                advice="grant pg_monitor to the migration role so the backfill can wait "
                "for standbys' replication lag; until then it does not",
            )
        lag, waits = row["lag_s"], int(row["lock_waits"])
        if self._limits.max_lag_s is not None and lag is not None and lag > self._limits.max_lag_s:
            return Over("replication_lag", round(lag, 3), self._limits.max_lag_s)
        if self._limits.max_lock_waits is not None and waits > self._limits.max_lock_waits:
            return Over("lock_waits", waits, self._limits.max_lock_waits)
        return None

    async def wait(self) -> float:
        """Wait until no reading is over its limit; the seconds waited (0 at once). Raises
        GaveUp when one is still over after ``max_wait_s``."""
        started = time.monotonic()
        reported = float("-inf")
        delay = FIRST_POLL_S
        give_up = self._limits.max_wait_s
        while (over := await self.over()) is not None:
            now = time.monotonic()
            if give_up is not None and now - started >= give_up:
                raise GaveUp(over, now - started)
            if now - reported >= self._report_interval:
                reported = now
                log.info(
                    "backfill_throttled",
                    **self._fields,
                    reason=over.reason,
                    value=over.value,
                    limit=over.limit,
                    waited_s=round(now - started, 1),
                )
            left = float("inf") if give_up is None else give_up - (now - started)
            await asyncio.sleep(max(0.0, min(delay, left)))
            delay = min(MAX_POLL_S, delay * 2)
        return time.monotonic() - started
