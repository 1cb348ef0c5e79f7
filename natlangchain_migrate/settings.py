"""One run's settings, typed, in one object: what the keyword API and the CLI both fill in.

The public keyword arguments keep their documented names; two are renamed here
so that each name means one thing: ``target`` (a version) is ``target_version``
(a "target" is never a connection), and ``lock_timeout`` (seconds to wait for
another runner's advisory lock) is ``lock_wait`` (``pg_lock_timeout`` is
PostgreSQL's own lock_timeout inside each migration).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import asyncpg


class RunSettings(NamedTuple):
    """Where to connect, which migrations, and how to lock and run them."""

    dsn: str | None = None
    pool: asyncpg.Pool | None = None
    migrations_dir: Traversable | Path | str | None = None
    schema: str = "public"
    target_version: int | None = None
    skip: frozenset[int] = frozenset()
    dry_run: bool = False
    lock_wait: float = 300.0
    lock_namespace: str | None = None
    lock_mode: str = "session"
    connect_wait: float = 0.0
    pg_lock_timeout: str = "5s"
    statement_timeout: str | None = None
    lock_retries: int = 5
    retry_delay: float = 1.0
    progress_interval: float = 5.0
    # Refuse a pending version lower than the highest applied one (goose, Flyway default).
    strict_order: bool = False
    # Refuse ledger rows above every local file (a newer release's) instead of warning.
    refuse_future: bool = False
    # Schemas of the database's installed extensions, searched after ``schema`` so that
    # their types resolve (pgvector in public, migrations in app). Read when applying.
    extension_schemas: tuple[str, ...] = ()
    # Expand/contract: run the allowed contract parts after the expand parts, and how long
    # a replica's heartbeat counts it alive (see contract.py, replicas.py).
    auto_contract: bool = False
    replica_max_age: float = 60.0

    @property
    def search_path(self) -> str:
        """The search_path migrations run under: the target schema first, pg_temp last."""
        schemas = [self.schema, *self.extension_schemas]
        return ", ".join('"' + name.replace('"', '""') + '"' for name in schemas) + ", pg_temp"

    @property
    def transaction_pooling(self) -> bool:
        """True in the lock mode made for PgBouncer's transaction pooling: no session state."""
        return self.lock_mode == "transaction"


def skip_set(skip: Collection[int]) -> frozenset[int]:
    """``skip=`` as given by a caller (list, tuple, set), as the settings keep it."""
    return frozenset(int(version) for version in skip)
