"""What a run is told, grouped by its owner, and what it finds out while running.

- ``RunnerOptions``: what belongs to the runner (where to connect, which folder and
  schema, how to lock, how to run each file), set once on a ``Migrator``;
- ``CallArguments``: what belongs to one call (target version, skips, dry run);
- ``ServerFacts``: what a run finds on the server (the extensions' schemas); a value
  that flows, never patched into the options.

Two names say which lock they mean: ``LockOptions.wait`` is how long to wait for
another runner's advisory lock (``--lock-timeout``, ``lock_timeout=``), and
``ExecutionOptions.pg_lock_timeout`` is PostgreSQL's own lock_timeout inside each
migration (``--pg-lock-timeout``).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypedDict

from natlangchain_migrate.errors import ConfigurationError

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import asyncpg


class LockMode(StrEnum):
    """How the advisory lock is held."""

    # A session-level lock held across one transaction per migration.
    SESSION = "session"
    # A transaction-level lock inside the one transaction that holds every pending
    # migration: the mode that works through PgBouncer's transaction pooling.
    TRANSACTION = "transaction"


LOCK_MODES = tuple(mode.value for mode in LockMode)


def lock_mode_of(value: LockMode | str) -> LockMode:
    """``lock_mode=`` or ``--lock-mode`` as the enum; an unknown one is refused."""
    try:
        return LockMode(value)
    except ValueError:
        raise ConfigurationError(
            f"--lock-mode {value!r} is not one of {', '.join(LOCK_MODES)} "
            "(in the library: lock_mode=)"
        ) from None


class LockOptions(NamedTuple):
    """The advisory lock every runner of one schema shares."""

    wait: float = 300.0  # seconds to wait for another runner's lock
    namespace: str | None = None  # default: natlangchain_migrate:<schema>
    mode: LockMode = LockMode.SESSION


class ExecutionOptions(NamedTuple):
    """How each migration file (up or down) runs."""

    pg_lock_timeout: str = "5s"  # PostgreSQL's lock_timeout, per attempt
    statement_timeout: str | None = None
    lock_retries: int = 5  # attempts after the first one cancelled by lock_timeout
    retry_delay: float = 1.0
    progress_interval: float = 5.0


class RunnerOptions(NamedTuple):
    """Everything that belongs to the runner rather than to one call."""

    dsn: str | None = None
    pool: asyncpg.Pool | None = None
    migrations_dir: Traversable | Path | str | None = None
    schema: str = "public"
    connect_wait: float = 0.0
    # Refuse a pending version lower than the highest applied one (goose, Flyway default).
    strict_order: bool = False
    # Refuse ledger rows above every local file (a newer release's) instead of warning.
    refuse_future: bool = False
    # Expand/contract: run the allowed contract parts after the expand parts, and how long
    # a replica's heartbeat counts it alive (see contracts.py, replicas.py).
    auto_contract: bool = False
    replica_max_age: float = 60.0
    lock: LockOptions = LockOptions()
    execution: ExecutionOptions = ExecutionOptions()

    @property
    def transaction_pooling(self) -> bool:
        """True in the lock mode made for PgBouncer's transaction pooling: no session state."""
        return self.lock.mode is LockMode.TRANSACTION


class CallArguments(NamedTuple):
    """What one ``up`` call asks for."""

    target_version: int | None = None
    skip: frozenset[int] = frozenset()
    dry_run: bool = False


class ServerFacts(NamedTuple):
    """What a run found on the server before applying anything."""

    # Schemas of the database's installed extensions, searched after the target schema
    # so that their types resolve (pgvector in public, migrations in app).
    extension_schemas: tuple[str, ...] = ()
    # The server has transaction_timeout (PostgreSQL 17+), which migrations turn off.
    transaction_timeout: bool = False

    def search_path(self, schema: str) -> str:
        """The search_path migrations run under: the target schema first, pg_temp last."""
        from natlangchain_migrate.sqltext import quote_ident

        names = [schema, *self.extension_schemas]
        return ", ".join(quote_ident(name) for name in names) + ", pg_temp"


class MigrateOptions(TypedDict, total=False):
    """The keyword arguments of ``migrate()`` (and so of ``run_migrations()``)."""

    pool: asyncpg.Pool | None
    target: int | None
    skip: Collection[int]
    dry_run: bool
    migrations_dir: Traversable | Path | str | None
    schema: str
    lock_timeout: float
    lock_namespace: str | None
    lock_mode: LockMode | str
    wait: float
    pg_lock_timeout: str
    statement_timeout: str | None
    lock_retries: int
    retry_delay: float
    progress_interval: float
    strict_order: bool
    refuse_future: bool
    auto_contract: bool | None
    replica_max_age: float | None


def check_schema_name(schema: str) -> None:
    """A schema name PostgreSQL keeps whole: 1 to 63 bytes (longer ones it truncates)."""
    size = len(schema.encode("utf-8"))
    if not 0 < size <= 63:
        raise ConfigurationError(
            f"--schema {schema[:80]!r} is {size} bytes; PostgreSQL names are 1 to 63 bytes "
            "(in the library: schema=)"
        )
    if schema.startswith("pg_"):
        raise ConfigurationError(
            f"--schema {schema}: names beginning with pg_ are PostgreSQL's own; pick another "
            "schema (in the library: schema=)"
        )


def target_of(target: object) -> int | None:
    """``target=`` (``--version``) as a version number: an int, or a string of digits."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
        return target
    if isinstance(target, str) and target.strip().isdigit():
        return int(target)
    raise ConfigurationError(
        f"target={target!r} is not a version number; give the version to migrate up to, "
        "such as target=2 (--version 2)"
    )


def skip_set(skip: Collection[int]) -> frozenset[int]:
    """``skip=`` as given by a caller (list, tuple, set), as the calls keep it."""
    return frozenset(int(version) for version in skip)
