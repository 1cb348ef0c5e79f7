"""``Migrator``, the one internal API: exported with its options and every error a caller
can get; the documented keyword functions keep their signatures and go through it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import natlangchain_migrate
from natlangchain_migrate import (
    ConfigurationError,
    ExecutionOptions,
    LockMode,
    LockOptions,
    MigrateError,
    Migrator,
    errors,
)
from natlangchain_migrate.settings import MigrateOptions
from tests.conftest import ledger_rows, write_migrations

FILES = {
    "001_a.sql": "CREATE TABLE a (id int);\n",
    "001_a.down.sql": "DROP TABLE a;\n",
    "002_b.sql": "CREATE TABLE b (id int);\n",
    "002_b.down.sql": "DROP TABLE b;\n",
}

MIGRATE_KEYWORDS = [
    "dsn",
    "pool",
    "target",
    "skip",
    "dry_run",
    "migrations_dir",
    "schema",
    "lock_timeout",
    "lock_namespace",
    "lock_mode",
    "wait",
    "pg_lock_timeout",
    "statement_timeout",
    "lock_retries",
    "retry_delay",
    "progress_interval",
    "strict_order",
    "refuse_future",
]


def test_every_error_a_caller_can_get_is_exported() -> None:
    raised = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, MigrateError)
    }
    assert raised <= set(natlangchain_migrate.__all__)
    for name in natlangchain_migrate.__all__:
        assert getattr(natlangchain_migrate, name) is not None


def test_status_and_rollback_return_exported_types() -> None:
    for name in ("MigrationPlan", "RollbackResult", "MigrationReport", "Migrator"):
        assert name in natlangchain_migrate.__all__
    assert inspect.signature(Migrator.status).return_annotation == "MigrationPlan"
    assert inspect.signature(Migrator.rollback).return_annotation == "list[RollbackResult]"


def test_the_keyword_functions_keep_their_documented_signatures() -> None:
    assert list(inspect.signature(natlangchain_migrate.migrate).parameters) == MIGRATE_KEYWORDS
    # run_migrations(**options) takes exactly migrate()'s keywords but dsn, typed.
    assert list(MigrateOptions.__annotations__) == MIGRATE_KEYWORDS[1:]
    baseline = inspect.signature(natlangchain_migrate.baseline).parameters
    assert list(baseline)[:3] == ["version", "dsn", "force"]


def test_an_unknown_lock_mode_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="--lock-mode 'bogus' is not one of"):
        Migrator(lock=LockOptions(mode="bogus"))  # type: ignore[arg-type]
    assert Migrator(lock=LockOptions(mode="transaction")).options.transaction_pooling  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_one_migrator_does_every_operation(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    migrator = Migrator(
        database_url,
        migrations_dir=folder,
        lock=LockOptions(wait=10, mode=LockMode.TRANSACTION),
        execution=ExecutionOptions(pg_lock_timeout="1s", lock_retries=1),
    )
    assert [r.version for r in (await migrator.up(1)).applied] == [1]
    assert [e.version for e in (await migrator.status()).pending] == [2]
    assert [r.version for r in (await migrator.up(dry_run=True)).pending] == [2]
    await migrator.up()
    assert [u.version for u in await migrator.rollback(to=0, dry_run=True)] == [2, 1]
    assert [u.version for u in await migrator.rollback()] == [2]
    assert [r["version"] for r in await ledger_rows(database_url)] == [1]
    assert await migrator.repair() == []
    assert await Migrator(database_url, migrations_dir=folder).baseline(2, force=True) == [2]
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2]
