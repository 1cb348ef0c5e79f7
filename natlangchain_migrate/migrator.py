"""``Migrator``: the one internal API. It holds what belongs to the runner; each method
takes what belongs to one call.

    migrator = Migrator(dsn, migrations_dir="migrations", lock=LockOptions(wait=60))
    report = await migrator.up()
    plan = await migrator.status()

The keyword functions (``migrate()``, ``rollback()``, ...), the CLI and every command
build one and call its methods. The modules that do the work load when a method first
needs them: an up-to-date start-up never imports rollback's or the apply path's code.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.causes import classified
from natlangchain_migrate.settings import (
    CallArguments,
    ExecutionOptions,
    LockOptions,
    RunnerOptions,
    check_schema_name,
    lock_mode_of,
    skip_set,
    target_of,
)

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import asyncpg

    from natlangchain_migrate.baseline_writer import WrittenBaseline
    from natlangchain_migrate.contracts import ContractReport
    from natlangchain_migrate.plan import MigrationPlan
    from natlangchain_migrate.results import MigrationReport
    from natlangchain_migrate.undo import RollbackResult
    from natlangchain_migrate.verify import VerifyReport


class Migrator:
    """Migrations of one folder into one schema of one database, under one lock.

    ``dsn`` defaults to DATABASE_URL; ``pool`` is an asyncpg pool to borrow one
    connection from instead. ``connect_wait`` is how long to retry a server that is
    not up yet; ``strict_order`` refuses a pending version below the highest applied
    one; ``refuse_future`` refuses versions applied above the newest file (by a newer
    release), which are otherwise warned of once and left alone. ``auto_contract``
    runs, after the expand parts, the contract parts (``NNN_name.contract.sql``) that no
    replica seen within ``replica_max_age`` seconds still needs. ``lock`` is the advisory
    lock (how long to wait for it, its namespace, its mode); ``execution`` is how each
    file runs, up or down (PostgreSQL's lock_timeout with retries, statement_timeout,
    the progress interval).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        migrations_dir: Traversable | Path | str | None = None,
        schema: str = "public",
        connect_wait: float = 0.0,
        strict_order: bool = False,
        refuse_future: bool = False,
        auto_contract: bool = False,
        replica_max_age: float = 60.0,
        lock: LockOptions | None = None,
        execution: ExecutionOptions | None = None,
    ) -> None:
        lock = lock or LockOptions()
        check_schema_name(schema)
        self.options = RunnerOptions(
            dsn=dsn,
            pool=pool,
            migrations_dir=migrations_dir,
            schema=schema,
            connect_wait=connect_wait,
            strict_order=strict_order,
            refuse_future=refuse_future,
            auto_contract=auto_contract,
            replica_max_age=replica_max_age,
            lock=lock._replace(mode=lock_mode_of(lock.mode)),
            execution=execution or ExecutionOptions(),
        )

    async def up(
        self, target: int | None = None, *, skip: Collection[int] = (), dry_run: bool = False
    ) -> MigrationReport:
        """Apply what is pending, up to version ``target``, leaving ``skip`` out; with
        ``dry_run``, report what would run and change nothing."""
        from natlangchain_migrate import runner

        call = CallArguments(target_version=target_of(target), skip=skip_set(skip), dry_run=dry_run)
        with classified():
            return await runner.up(self.options, call)

    async def status(self, *, skip: Collection[int] = ()) -> MigrationPlan:
        """Every version's state, read-only and lock-free."""
        from natlangchain_migrate import operations

        with classified():
            return await operations.status(self.options, skip=skip_set(skip))

    async def rollback(
        self, *, steps: int = 1, to: int | None = None, dry_run: bool = False
    ) -> list[RollbackResult]:
        """Undo the last ``steps`` applied migrations, or every one above version ``to``,
        newest first; a dry run returns the down SQL that would run."""
        from natlangchain_migrate import undo

        with classified():
            return await undo.rollback(self.options, steps=steps, to=to, dry_run=dry_run)

    async def contract(self, *, dry_run: bool = False, force: bool = False) -> ContractReport:
        """Run the contract parts that may run: expand part applied, and no replica seen
        within ``replica_max_age`` ships a release below their version (``force``: run those
        waiting for old replicas anyway, saying which); each once, under the lock."""
        from natlangchain_migrate import contracts

        return await contracts.run_contracts(self.options, dry_run=dry_run, force=force)

    async def repair(self) -> list[int]:
        """Make the ledger agree with the files as they are; the versions changed."""
        from natlangchain_migrate import operations

        with classified():
            return await operations.repair(self.options)

    async def baseline(self, version: int, *, force: bool = False) -> list[int]:
        """Record versions up to ``version`` as applied without running them."""
        from natlangchain_migrate import operations

        with classified():
            return await operations.baseline(self.options, version, force=force)

    async def dump_schema(self) -> str:
        """The schema as deterministic SQL, the ledger left out (``dump-schema``)."""
        from natlangchain_migrate.connection import resolve_dsn
        from natlangchain_migrate.schema_dump import dump_schema

        dsn = resolve_dsn(self.options.dsn)
        return await dump_schema(dsn, schema=self.options.schema, wait=self.options.connect_wait)

    async def baseline_file(
        self, *, server_dsn: str, up_to: int | None = None, name: str = "schema"
    ) -> WrittenBaseline:
        """Write ``NNN_name.baseline.sql`` into the migrations folder: the schema after the
        versions up to ``up_to``, replayed on a scratch database on ``server_dsn``'s server."""
        from natlangchain_migrate.baseline_writer import write_baseline_file

        with classified():
            return await write_baseline_file(
                self.options, server_dsn=server_dsn, up_to=up_to, label=name
            )

    async def verify(self, *, server_dsn: str) -> VerifyReport:
        """Check every down file on a scratch database on the server of ``server_dsn``:
        each restores the schema before its migration, and up again gives the same."""
        from natlangchain_migrate import verify

        with classified():
            return await verify.verify(self.options, server_dsn=server_dsn)
