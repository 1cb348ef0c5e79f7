"""Running contract parts: each exactly once, under the migration lock, in one transaction
with its row in ``schema_contracts``, and only when no replica of an older release is
alive (``contract_plan.py`` decides which; ``replicas.py`` keeps the registry).

They run from the ``contract`` command (a post-deploy Job or hook), from ``contract()``,
and, when enabled, at the start-up of a replica after the expand parts
(``migrate(auto_contract=True)``). A rollback undoes a version's contract part first.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import asyncpg

from natlangchain_migrate.contract_ledger import ContractLedger
from natlangchain_migrate.contract_plan import (
    ContractEntry,
    ContractRow,
    ContractState,
    contract_part,
    plan_contracts,
    raise_on_contract_drift,
    runnable,
    waiting,
)
from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import ConfigurationError, MigrateError
from natlangchain_migrate.events import log
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.plan import State, plan_migrations, raise_on_drift
from natlangchain_migrate.replicas import Replica, replicas_table
from natlangchain_migrate.results import ContractResult
from natlangchain_migrate.settings import RunnerOptions

if TYPE_CHECKING:
    from natlangchain_migrate.attempt import Attempts
    from natlangchain_migrate.connection import RunConnection

AUTO_VARIABLE = "NATLANGCHAIN_MIGRATE_AUTO_CONTRACT"
MAX_AGE_VARIABLE = "NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE"
_AGE = re.compile(r"^(?P<number>\d+(\.\d+)?)(?P<unit>ms|s|min|h)?$")
_AGE_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


_SEP = "\x1f"  # the unit separator: never in a name, a checksum or a number
_CONTRACT_TEXT = (
    "concat_ws(chr(31), version::text, forced::text, extract(epoch FROM applied_at)::text, "
    "coalesce(execution_ms::text, ''), checksum, name)"
)
_REPLICA_TEXT = (
    "concat_ws(chr(31), release::text, extract(epoch FROM now() - seen_at)::text, "
    "extract(epoch FROM started_at)::text, (label IS NULL)::text, coalesce(label, ''), "
    "replica_id)"
)


def _contract_row(text: str) -> ContractRow:
    version, forced, applied, ms, checksum, name = text.split(_SEP, 5)
    return ContractRow(
        int(version),
        name,
        checksum,
        datetime.fromtimestamp(float(applied), UTC),
        float(ms) if ms else None,
        forced == "true",
    )


def _replica(text: str) -> Replica:
    release, seen, started, no_label, label, replica_id = text.split(_SEP, 5)
    return Replica(
        replica_id,
        int(release),
        None if no_label == "true" else label,
        datetime.fromtimestamp(float(started), UTC),
        float(seen),
    )


class ContractReport:
    """The outcome of ``contract()``: what ran (``applied``), what a dry run would run
    (``pending``), and what must wait (``waiting``, each with the replicas it waits for)."""

    def __init__(self, *, dry_run: bool = False) -> None:
        self.applied: list[ContractResult] = []
        self.pending: list[ContractResult] = []
        self.waiting: list[ContractEntry] = []
        self.dry_run = dry_run
        self.duration_ms = 0.0

    def __repr__(self) -> str:
        return (
            f"ContractReport(applied={self.applied!r}, pending={self.pending!r}, "
            f"waiting={[entry.name for entry in self.waiting]!r}, dry_run={self.dry_run!r})"
        )


def parse_age(text: str, where: str) -> float:
    """``60``, ``60s``, ``2min``, ``500ms``: seconds (a bare number is seconds)."""
    found = _AGE.match(text.strip())
    if found is None:
        raise ConfigurationError(
            f"{where} {text!r} is not a duration; use seconds (60) or a number with ms, s, "
            "min or h (60s, 2min)"
        )
    return float(found["number"]) * _AGE_UNITS[found["unit"]]


def env_flag(name: str) -> bool:
    """A yes/no environment variable; anything else is a one-line error naming it."""
    value = (os.environ.get(name) or "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ConfigurationError(
            f"{name}={value!r} is not one of: 1, 0, true, false, yes, no, on, off"
        )
    return value in _TRUE


def env_max_age() -> float:
    """NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE, else 60 seconds."""
    value = os.environ.get(MAX_AGE_VARIABLE)
    return parse_age(value, MAX_AGE_VARIABLE) if value else 60.0


def check_max_age(max_age: float) -> None:
    if not (max_age > 0 and math.isfinite(max_age)):
        raise ConfigurationError(
            f"--replica-max-age {max_age!r} must be a positive number of seconds, longer than "
            "the replicas' heartbeat interval (in the library: replica_max_age=)"
        )


async def run_contracts(
    options: RunnerOptions, *, dry_run: bool = False, force: bool = False
) -> ContractReport:
    """``Migrator.contract()``: run the contract parts that may run, on a connection of its
    own; a connection lost meanwhile is reported as such."""
    from natlangchain_migrate import preflight
    from natlangchain_migrate.connection import is_connection_lost, open_run_connection
    from natlangchain_migrate.errors import ConnectionLostError

    started = time.monotonic()
    migrations = load_migrations(options.migrations_dir)
    preflight.check_options(migrations, options)
    check_max_age(options.replica_max_age)
    async with open_run_connection(options) as connection:
        try:
            report = await contract_on(
                connection, migrations, options, dry_run=dry_run, force=force
            )
        except Exception as error:
            if isinstance(error, ConnectionLostError) or not (
                is_connection_lost(error) or connection.conn.is_closed()
            ):
                raise
            raise ConnectionLostError(
                f"the connection to the server was lost while contract parts ran "
                f"({type(error).__name__}: {error}); what was running was rolled back and not "
                "recorded. Run contract again"
            ) from error
    report.duration_ms = ms_since(started)
    log.info(
        "contract_done",
        applied=[result.version for result in report.applied],
        would_apply=[result.version for result in report.pending],
        waiting=[entry.version for entry in report.waiting],
        dry_run=dry_run,
        duration_ms=report.duration_ms,
    )
    return report


async def contract_entries(
    conn: asyncpg.Connection,
    migrations: Sequence[Migration],
    parts: Sequence[Migration],
    options: RunnerOptions,
    *,
    check_expand_drift: bool = True,
    expanded: Collection[int] | None = None,
) -> list[ContractEntry]:
    """Every part's state: from the ledger (unless ``expanded``, the versions a start-up
    just found applied, is given), the contract rows and the alive replicas."""
    if expanded is None:
        from natlangchain_migrate.baseline_files import load_baselines, newest_baseline

        baseline = newest_baseline(load_baselines(options.migrations_dir))
        plan = plan_migrations(
            migrations,
            (await Ledger(options.schema).read(conn)).rows,
            squashed_up_to=baseline.version if baseline else None,
        )
        if check_expand_drift:
            raise_on_drift(plan)
        expanded = {entry.version for entry in plan.entries if entry.state is State.APPLIED}
    rows, alive = await _rows_and_replicas(conn, options)
    return plan_contracts(
        parts, expanded, rows, alive, highest_local=max((m.version for m in migrations), default=0)
    )


async def _rows_and_replicas(
    conn: asyncpg.Connection, options: RunnerOptions
) -> tuple[list[ContractRow], list[Replica]]:
    """The contract rows and the alive replicas in two queries at most: which of the two
    tables exist (none before the first heartbeat and the first contract part: nothing
    is read, and no error is left in the server's log), then both at once."""
    contracts = ContractLedger(options.schema).table
    replicas = replicas_table(options.schema)
    (found,) = await conn.fetch(
        "SELECT to_regclass($1) IS NOT NULL AS contracts, to_regclass($2) IS NOT NULL AS replicas",
        contracts,
        replicas,
    )
    # Each row as one text value (only text[] among array types costs a fresh connection
    # no type introspection by asyncpg: three more round trips otherwise).
    columns, arguments = [], []
    if found["contracts"]:
        columns.append(f"ARRAY(SELECT {_CONTRACT_TEXT} FROM {contracts}) AS contracts")
    if found["replicas"]:
        columns.append(
            f"ARRAY(SELECT {_REPLICA_TEXT} FROM {replicas} "
            "WHERE seen_at > now() - make_interval(secs => $1) ORDER BY release, replica_id) "
            "AS replicas"
        )
        arguments.append(float(options.replica_max_age))
    if not columns:
        return [], []
    (record,) = await conn.fetch("SELECT " + ", ".join(columns), *arguments)
    rows = [_contract_row(text) for text in record.get("contracts") or ()]
    replicas_alive = [_replica(text) for text in record.get("replicas") or ()]
    return rows, replicas_alive


def contract_parts(migrations: Sequence[Migration]) -> list[Migration]:
    """The folder's contract files, read and checksummed, by version."""
    return [part for part in map(contract_part, migrations) if part is not None]


async def contract_on(
    connection: RunConnection,
    migrations: Sequence[Migration],
    options: RunnerOptions,
    *,
    dry_run: bool = False,
    force: bool = False,
    auto: bool = False,
    expanded: Collection[int] | None = None,
) -> ContractReport:
    """Plan, then (unless a dry run) take the lock, plan again under it and run what may
    run. ``auto`` (a start-up) logs a part that must wait at debug level only."""
    conn = connection.conn
    report = ContractReport(dry_run=dry_run)
    parts = contract_parts(migrations)
    if not parts and auto:
        return report
    # Without contract files, still read: a row whose file is gone is drift.
    entries = await contract_entries(conn, migrations, parts, options, expanded=expanded)
    raise_on_contract_drift(entries)
    if not parts:
        log.info("contract_nothing_to_do", reason="no NNN_name.contract.sql files")
        return report
    todo = runnable(entries, force=force)
    report.waiting = waiting(entries, force=force)
    if not todo:
        _log_waiting(report.waiting, auto=auto)
        return report
    if dry_run:
        report.pending = [
            ContractResult(e.version, e.name, forced=bool(e.waiting_for), status="pending")
            for e in todo
        ]
        _log_waiting(report.waiting, auto=auto)
        return report
    from natlangchain_migrate.attempt import Attempts, read_server_facts
    from natlangchain_migrate.locks import LockNoLongerNeeded, holding, migration_lock

    async def nothing_left() -> bool:
        again = await contract_entries(conn, migrations, parts, options)
        return not runnable(again, force=force)

    lock = migration_lock(conn, options, unless=nothing_left)
    try:
        async with holding(lock, options.lock.mode):
            book = ContractLedger(options.schema)
            await book.ensure(conn, widest=max((m.version for m in migrations), default=0))
            entries = await contract_entries(conn, migrations, parts, options)
            raise_on_contract_drift(entries)
            report.waiting = waiting(entries, force=force)
            facts = await read_server_facts(conn, options.schema)
            runner = _PartRunner(
                Attempts(connection, options.execution, schema=options.schema, applied=[]),
                book,
                options,
                facts.search_path(options.schema),
            )
            by_version = {part.version: part for part in parts}
            for entry in runnable(entries, force=force):
                report.applied.append(await runner.run(by_version[entry.version], entry))
    except LockNoLongerNeeded:
        log.info("contract_applied_by_another_runner", lock_key=lock.key)
    _log_waiting(report.waiting, auto=auto)
    return report


_SAVEPOINT = "natlangchain_migrate_contract"


class _PartRunner:
    """Runs contract parts as up files run (attempt.py): PostgreSQL's lock_timeout with
    retries, statement_timeout, the watcher; each with its row in one transaction (a
    savepoint of the lock's transaction in transaction lock mode)."""

    def __init__(
        self, attempts: Attempts, book: ContractLedger, options: RunnerOptions, search_path: str
    ) -> None:
        self.attempts = attempts
        self.book = book
        self.execution = options.execution
        self.search_path = search_path
        self.in_open_transaction = options.transaction_pooling

    async def run(self, part: Migration, entry: ContractEntry) -> ContractResult:
        forced = bool(entry.waiting_for)
        if forced:
            log.warning(
                "contract_forced",
                version=part.version,
                name=part.name,
                overrides=[replica.describe() for replica in entry.waiting_for],
                note="--force: these replicas of an older release looked alive and may still "
                "use what this contract part removes",
            )
        try:
            duration = await self.attempts.retrying(partial(self._once, part, forced))
        except MigrateError as failure:
            log.error(
                "contract_failed",
                version=part.version,
                file=getattr(failure, "location", part.filename),
                sqlstate=getattr(failure, "sqlstate", None),
                error=str(failure),
            )
            raise
        log.info(
            "contract_applied",
            version=part.version,
            name=part.name,
            file=part.filename,
            duration_ms=duration,
            forced=forced,
        )
        return ContractResult(part.version, part.name, duration, forced)

    async def _once(self, part: Migration, forced: bool) -> float:
        from natlangchain_migrate.attempt import settings_sql

        prefix = settings_sql(part, self.execution, self.search_path, local=True)
        body = f"{part.sql}\n;\n{self.book.record_statement(part, forced=forced)};\n"
        savepoint = _SAVEPOINT if self.in_open_transaction else None
        started = time.monotonic()
        await self.attempts.send_one_commit(part, prefix, body, savepoint=savepoint)
        return ms_since(started)


def _log_waiting(entries: Sequence[ContractEntry], *, auto: bool) -> None:
    if not entries:
        return
    fields = {
        "versions": [entry.version for entry in entries],
        "reasons": {entry.name: waiting_reason(entry) for entry in entries},
    }
    if auto:  # a start-up during a rollout: expected, not news
        log.debug("contract_waiting", **fields)
    else:
        log.info("contract_waiting", **fields)


def waiting_reason(entry: ContractEntry) -> str:
    if entry.state is ContractState.EXPAND_PENDING:
        return "its expand part is not applied yet: run the migrations first"
    if entry.state is ContractState.WAITING:
        who = ", ".join(
            f"{r.replica_id} (release {r.release}, {r.label or 'no label'}, seen "
            f"{r.seen_s_ago:.0f}s ago)"
            for r in entry.waiting_for
        )
        return f"replicas of an older release are alive: {who}"
    return "a lower contract part waits"


async def auto_contract(
    connection: RunConnection,
    migrations: Sequence[Migration],
    options: RunnerOptions,
    expanded: Collection[int],
) -> list[ContractResult]:
    """At start-up, after the expand parts (``expanded``: the versions now applied): run
    the contract parts that may run. Two queries when none may; the lock only when one
    may."""
    report = await contract_on(connection, migrations, options, auto=True, expanded=expanded)
    return report.applied


async def contract_status(options: RunnerOptions) -> list[ContractEntry]:
    """Every contract part's state (``--status``), read-only and lock-free; also the rows of
    contract parts whose file is gone (MISSING)."""
    from natlangchain_migrate.connection import open_run_connection

    migrations = load_migrations(options.migrations_dir)
    parts = contract_parts(migrations)
    async with open_run_connection(options) as connection:
        return await contract_entries(
            connection.conn, migrations, parts, options, check_expand_drift=False
        )
