"""Batched backfills: a migration that changes many rows in short transactions.

A file whose header says ``-- natlangchain: backfill table=big key=id`` holds one
statement with ``:lo`` and ``:hi``, the inclusive key bounds of a batch::

    -- natlangchain: backfill table=big key=id target=200ms pause=0s
    UPDATE big SET total_cents = round(total * 100) WHERE id BETWEEN :lo AND :hi;

Batches are keyset ranges over ``key`` (the next ``size`` keys after the last batch's
upper bound: an index range, never OFFSET from the start). Each batch is one
transaction that also writes its upper bound to ``schema_backfills``, so a kill -9
loses at most the batch in flight and the next run resumes after the last committed
one: every row is changed once. The batch size follows a target duration; progress
events carry rows done, rows estimated and an ETA. Before each batch it waits while
standbys lag or sessions wait for locks on the table (throttle.py), and a SIGTERM
during a batch lets that batch commit before the run stops (signals.py). The
migration's ledger row is written, and its position row removed, in one transaction
after the last batch.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import NamedTuple

import asyncpg

from natlangchain_migrate.backfill_batch import BOUND, literal, render, send
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.durations import is_duration, seconds
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.events import log
from natlangchain_migrate.signals import batch_finishes_on_sigterm
from natlangchain_migrate.sqltext import quote_ident
from natlangchain_migrate.throttle import GaveUp, Limits, Throttle
from natlangchain_migrate.versions import MAX_INTEGER, WIDE_VERSION, needs_widening

POSITIONS = "schema_backfills"
FIRST_BATCH = 1000
MAX_BATCH = 100_000
AIM = 0.8  # batch=auto sizes towards this share of the target
SLACK_S = 0.1  # a batch=auto batch is cancelled and halved past target + this
_SETTING = re.compile(
    r"^(?P<key>table|key|target|pause|batch|max-lag|max-lock-waits|max-wait)=(?P<value>\S+)$"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class Backfill(NamedTuple):
    """A backfill file's settings (its statement is the file's text, with :lo and :hi)."""

    table: str  # quoted, schema-qualified if the directive was
    key: str  # quoted
    target_s: float
    pause_s: float
    batch: int | None  # a fixed size; None sizes batches to the target
    limits: Limits


def parse(migration: Migration) -> Backfill:
    """The backfill a file declares; a bad setting or statement is named, file:line."""
    where = f"{migration.filename} (its backfill line)"
    settings: dict[str, str] = {}
    for part in (migration.directives.backfill or "").split():
        found = _SETTING.match(part)
        if found is None:
            raise ConfigurationError(
                f"{where}: bad backfill setting '{part}'; write backfill table=NAME key=COLUMN "
                "[target=200ms] [pause=0s] [batch=auto|N] [max-lag=10s|off] "
                "[max-lock-waits=0|N|off] [max-wait=10min|off]"
            )
        settings[found["key"]] = found["value"]
    for needed in ("table", "key"):
        if not _NAME.match(settings.get(needed, "")):
            raise ConfigurationError(
                f"{where}: backfill needs {needed}=NAME (a plain or schema.table name)"
            )
    batch = settings.get("batch", "auto")
    if batch != "auto" and not (batch.isdigit() and int(batch) > 0):
        raise ConfigurationError(f"{where}: batch={batch}; write batch=auto or a row count")
    durations = {name: settings.get(name, default) for name, default in _DURATIONS}
    if not all(is_duration(value) for value in durations.values()):
        raise ConfigurationError(f"{where}: target and pause are durations such as 200ms, 1s")
    target_s, pause_s = (seconds(durations[name]) for name, _ in _DURATIONS)
    body = migration.sql
    if len(BOUND.findall(body)) < 2 or {m for m in BOUND.findall(body)} != {"lo", "hi"}:
        raise ConfigurationError(
            f"{migration.filename}: a backfill's statement uses :lo and :hi, the bounds of "
            "one batch (WHERE key BETWEEN :lo AND :hi)"
        )
    return Backfill(
        table=".".join(quote_ident(part) for part in settings["table"].split(".")),
        key=quote_ident(settings["key"]),
        target_s=target_s,
        pause_s=pause_s,
        batch=None if batch == "auto" else int(batch),
        limits=_limits(settings, where),
    )


def _limits(settings: dict[str, str], where: str) -> Limits:
    """``max-lag`` (a duration), ``max-lock-waits`` (a count) and ``max-wait`` (how long
    one wait before a batch may last: a duration); ``off`` turns one off."""
    lag = settings.get("max-lag", "10s")
    if lag != "off" and not is_duration(lag):
        raise ConfigurationError(f"{where}: max-lag={lag}; write a duration such as 10s, or off")
    waits = settings.get("max-lock-waits", "0")
    if waits != "off" and not waits.isdigit():
        raise ConfigurationError(
            f"{where}: max-lock-waits={waits}; write a number of waiting sessions (0 or more), "
            "or off"
        )
    wait = settings.get("max-wait", MAX_WAIT)
    if wait != "off" and not is_duration(wait):
        raise ConfigurationError(
            f"{where}: max-wait={wait}; write a duration such as 10min, or off"
        )
    return Limits(
        max_lag_s=None if lag == "off" else seconds(lag),
        max_lock_waits=None if waits == "off" else int(waits),
        max_wait_s=None if wait == "off" else seconds(wait),
    )


# How long one wait before a batch lasts before the backfill gives up (its position kept).
MAX_WAIT = "10min"


_DURATIONS = (("target", "200ms"), ("pause", "0s"))


class Progress(NamedTuple):
    rows_done: int
    rows_estimated: int
    eta_s: float | None


async def run(
    conn: asyncpg.Connection,
    migration: Migration,
    *,
    schema: str,
    record_sql: str,
    settings_sql: str,
    progress_interval: float,
    statement_timeout_s: float | None = None,
) -> None:
    """Run the backfill's remaining batches, then its ledger row (``record_sql``)."""
    spec = parse(migration)
    positions = f"{quote_ident(schema)}.{quote_ident(POSITIONS)}"
    await _ensure_positions(conn, positions, migration.version)
    key_type = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped",
        spec.table,
        spec.key.strip('"').replace('""', '"'),
    )
    if key_type is None:
        raise ConfigurationError(f"{migration.filename}: backfill key {spec.key} is not a column")
    row = await conn.fetchrow(
        f"SELECT position, rows_done FROM {positions} WHERE version = $1", migration.version
    )
    done = int(row["rows_done"]) if row else 0
    after = row["position"] if row else None
    estimated = await _estimate(conn, spec.table)
    throttle = Throttle(
        conn,
        spec.limits,
        table_oid=await conn.fetchval("SELECT $1::regclass::oid", spec.table),
        report_interval=progress_interval,
        fields={"version": migration.version, "name": migration.name, "file": migration.filename},
    )
    # The next batch's keys in one index range read: its first and last key (as text,
    # written back as literals of the key's type) and how many rows (none: done). Not
    # min()/max(), which some orderable types (uuid) lack; an ordered array_agg over the
    # already ordered keys needs no sort and costs a third of row_number() and count(*)
    # OVER () (5 against 15 ms for 20,000 keys), time the batches did not have.
    ranged = (
        "SELECT a[1]::text, a[n]::text, n FROM (SELECT array_agg(k ORDER BY k) AS a, "
        "count(*) AS n FROM ({} ORDER BY k LIMIT $1) r) s WHERE n > 0"
    )
    keys = f"SELECT {spec.key} AS k FROM {spec.table}"
    first = ranged.format(keys)
    following = ranged.format(f"{keys} WHERE {spec.key} > $2::text::{key_type}")
    size = spec.batch or FIRST_BATCH
    started, reported = time.monotonic(), time.monotonic()
    done_here = 0
    while True:
        span = await (
            conn.fetchrow(first, size) if after is None else conn.fetchrow(following, size, after)
        )
        if span is None:
            break
        lo, hi, rows = span[0], span[1], int(span[2])
        # After the range read, not straight after the last commit: a write that waited
        # for that batch's rows still holds its tuple lock for a moment as it wakes.
        try:
            await throttle.wait()
        except GaveUp as gave_up:
            raise _gave_up(migration, spec, gave_up, done) from None
        bound_s = _bound(spec, size, statement_timeout_s)
        batch = render(
            migration.sql,
            prefix=settings_sql + _timeout_sql(bound_s),
            bounds={"lo": literal(lo, key_type), "hi": literal(hi, key_type)},
            position_sql=(
                f"INSERT INTO {positions} VALUES ({int(migration.version)}, "
                f"{literal(hi, 'text')}, {done + rows}, now()) ON CONFLICT (version) DO UPDATE "
                "SET position = EXCLUDED.position, rows_done = EXCLUDED.rows_done, "
                "updated_at = now()"
            ),
        )
        batch_started = time.monotonic()
        try:
            with batch_finishes_on_sigterm():
                await send(conn, batch)
        except asyncpg.QueryCanceledError as error:
            if bound_s is None or time.monotonic() - batch_started < bound_s * 0.9:
                raise BatchError(error, batch.offset_for(_position(error))) from error
            log.info(
                "backfill_batch_over_target",
                version=migration.version,
                name=migration.name,
                file=migration.filename,
                batch_size=size,
                bound_ms=round(bound_s * 1000),
                next_batch_size=max(1, size // 2),
            )
            size = max(1, size // 2)  # rolled back: the same range again, halved
            continue
        except asyncpg.LockNotAvailableError:
            raise  # retried like a file's lock_timeout
        except asyncpg.PostgresError as error:
            raise BatchError(error, batch.offset_for(_position(error))) from error
        elapsed = time.monotonic() - batch_started
        done += rows
        done_here += rows
        after = hi
        if spec.batch is None:
            size = next_size(size, elapsed, spec.target_s)
        if time.monotonic() - reported >= progress_interval:
            reported = time.monotonic()
            _report(migration, _progress(done, done_here, estimated, started), size)
        if spec.pause_s:
            await asyncio.sleep(spec.pause_s)
    async with conn.transaction():
        await conn.execute(record_sql)
        await conn.execute(f"DELETE FROM {positions} WHERE version = $1", migration.version)
    _report(migration, Progress(done, max(done, estimated), 0.0), size)


class ThrottledTooLong(Exception):
    """A wait before a batch outlasted ``max-wait``; the message says it in one line."""


def _gave_up(migration: Migration, spec: Backfill, gave_up: GaveUp, done: int) -> Exception:
    over = gave_up.over
    limit = spec.limits.max_wait_s
    if over.reason == "lock_waits":
        reading = (
            f"sessions waiting for a lock on {spec.table} were {over.value:g}, over "
            f"max-lock-waits={over.limit:g}"
        )
    else:
        reading = f"standbys' replication lag was {over.value:g}s, over max-lag={over.limit:g}s"
    return ThrottledTooLong(
        f"{migration.filename}: the backfill gave up waiting before its next batch after "
        f"{gave_up.waited_s:.0f}s (max-wait={limit:g}s): {reading}; the {done} rows done "
        "stay committed with its position, and the next run resumes there: run again "
        "when the table is quieter, or raise max-wait (off: wait without end)"
    )


async def _ensure_positions(conn: asyncpg.Connection, positions: str, version: int) -> None:
    """The positions table, its version column as wide as the ledger's can be (a timestamp
    version is over integer's range); one made as integer by an earlier release widens in
    place when a version needs it (the run holds the migration lock)."""
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {positions} (version {WIDE_VERSION} PRIMARY KEY, "
        "position text NOT NULL, rows_done bigint NOT NULL, updated_at timestamptz NOT NULL)"
    )
    if version <= MAX_INTEGER:
        return
    current = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attname = 'version'",
        positions,
    )
    if (wider := needs_widening(current, version)) is not None:
        await conn.execute(f"ALTER TABLE {positions} ALTER COLUMN version TYPE {wider}")


def next_size(size: int, elapsed: float, target: float) -> int:
    """The next batch=auto size: towards AIM of the target, so that a batch slower than
    the last (the machine, a checkpoint) stays under it; at most halving, and growing at
    most 2x while the last batch took under half the target, 1.25x once over it."""
    scale = AIM * target / max(elapsed, 1e-3)
    growth = 2.0 if elapsed < target / 2 else 1.25
    return max(1, min(MAX_BATCH, int(size * min(growth, max(0.5, scale)))))


def _bound(spec: Backfill, size: int, statement_timeout_s: float | None) -> float | None:
    """The statement_timeout of a batch=auto batch: target + 100 ms (what a write may
    wait for its rows), unless the run's own is shorter. A one-row batch, or a fixed
    size, runs under the run's settings alone."""
    if spec.batch is not None or size <= 1:
        return None
    bound = spec.target_s + SLACK_S
    if statement_timeout_s and statement_timeout_s <= bound:
        return None
    return bound


def _timeout_sql(bound_s: float | None) -> str:
    if bound_s is None:
        return ""
    return f"; SET LOCAL statement_timeout = '{round(bound_s * 1000)}ms'"


async def _estimate(conn: asyncpg.Connection, table: str) -> int:
    """The table's rows as the planner knows them; counted once if never analysed."""
    known = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", table
    )
    if known is not None and known > 0:
        return int(known)
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


def _position(error: asyncpg.PostgresError) -> int | None:
    value = getattr(error, "position", None)
    return int(value) if value is not None and str(value).isdigit() else None


class BatchError(Exception):
    """A batch's server error, with ``offset`` for ``failures.locate`` (the batch went
    as one message with its bounds written in, so positions are mapped to the file)."""

    def __init__(self, error: asyncpg.PostgresError, offset: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.offset = offset


def _progress(done: int, done_here: int, estimated: int, started: float) -> Progress:
    estimated = max(estimated, done)
    rate = done_here / max(time.monotonic() - started, 1e-3)
    eta = (estimated - done) / rate if rate > 0 else None
    return Progress(done, estimated, eta)


def _report(migration: Migration, progress: Progress, size: int) -> None:
    log.info(
        "backfill_progress",
        version=migration.version,
        name=migration.name,
        file=migration.filename,
        rows_done=progress.rows_done,
        rows_estimated=progress.rows_estimated,
        eta_s=None if progress.eta_s is None else round(progress.eta_s, 1),
        batch_size=size,
    )
