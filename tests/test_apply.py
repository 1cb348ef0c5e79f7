"""Applying migrations to a real PostgreSQL, in process: once, completely, then never again;
up to a target, with skips, back by one, and over the seed's old ledger."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import ConfigurationError, migrate, rollback, status
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.plan import State
from tests.conftest import ledger_rows, table_names, write_migrations

pytestmark = pytest.mark.anyio

CORE_TABLES = {
    "entries",
    "blocks",
    "block_entries",
    "validation_results",
    "chain_state",
    "contracts",
    "disputes",
    "audit_log",
    "schema_migrations",
}
SEARCH_TABLES = {"entry_embeddings", "contract_embeddings"}
SCALING_TABLES = {
    "instance_registry",
    "distributed_locks",
    "cache_entries",
    "metrics_snapshots",
    "scheduled_jobs",
}
INDEXES = {
    "idx_entries_author",
    "idx_entries_intent",
    "idx_entries_timestamp",
    "idx_entries_metadata",
    "idx_blocks_block_index",
    "idx_blocks_hash",
    "idx_blocks_previous_hash",
    "idx_block_entries_block_id",
    "idx_block_entries_entry_id",
    "idx_validation_results_entry_id",
    "idx_validation_results_validator_type",
    "idx_validation_results_is_valid",
    "idx_contracts_status",
    "idx_contracts_created_by",
    "idx_contracts_parties",
    "idx_disputes_status",
    "idx_disputes_claimant",
    "idx_disputes_contract_id",
    "idx_audit_log_entity",
    "idx_audit_log_actor",
    "idx_audit_log_created_at",
    "idx_audit_log_event_type",
    "idx_entry_embeddings_hnsw",
    "idx_contract_embeddings_hnsw",
    "idx_entry_embeddings_entry_id",
    "idx_entry_embeddings_model_name",
    "idx_contract_embeddings_contract_id",
    "idx_instance_registry_heartbeat",
    "idx_instance_registry_leader",
    "idx_distributed_locks_expires",
    "idx_distributed_locks_owner",
    "idx_cache_entries_expires",
    "idx_metrics_snapshots_recorded",
    "idx_metrics_snapshots_name",
    "idx_metrics_snapshots_instance",
    "idx_scheduled_jobs_status",
    "idx_scheduled_jobs_due",
    "idx_scheduled_jobs_locked",
}
FUNCTIONS = {
    "update_updated_at_column",
    "search_similar_entries",
    "search_similar_contracts",
    "acquire_lock",
    "release_lock",
    "cache_get",
    "cache_set",
    "cache_delete",
    "claim_job",
    "cleanup_expired_data",
}
TRIGGERS = {
    ("entries", "update_entries_updated_at"),
    ("contracts", "update_contracts_updated_at"),
    ("chain_state", "update_chain_state_updated_at"),
}


async def test_fresh_database_gets_all_three_migrations_in_order(database_url: str) -> None:
    """A fresh apply runs 001, 002, 003 and records each with checksum and duration."""
    report = await migrate(database_url)
    assert [r.version for r in report.applied] == [1, 2, 3]
    assert all(r.duration_ms > 0 for r in report.applied)
    rows = await ledger_rows(database_url)
    assert [(r["version"], r["name"]) for r in rows] == [
        (1, "001_initial_schema"),
        (2, "002_add_semantic_search"),
        (3, "003_add_scaling_tables"),
    ]
    assert all(len(r["checksum"]) == 64 and r["execution_ms"] > 0 for r in rows)
    assert all(r["applied_by"].startswith("natlangchain-migrate/") for r in rows)


async def test_second_run_applies_nothing_and_writes_nothing(migrated_database_url: str) -> None:
    """Up to date: no migration applied, the ledger untouched, an up_to_date event."""
    before = await ledger_rows(migrated_database_url)
    with capture_logs() as events:
        report = await migrate(migrated_database_url)
    assert report.applied == []
    assert report.up_to_date
    assert report.already_applied == [1, 2, 3]
    assert await ledger_rows(migrated_database_url) == before
    names = [e["event"] for e in events]
    assert "up_to_date" in names
    assert "lock_acquired" not in names


async def test_every_object_of_the_data_model_exists(migrated_database_url: str) -> None:
    """Tables, indexes, functions, triggers and comments of SCHEMA.md are all there."""
    conn = await asyncpg.connect(migrated_database_url)
    try:
        tables = {
            r["relname"]: r["comment"]
            for r in await conn.fetch(
                "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        }
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
        functions = {
            r["proname"]: r["proconfig"]
            for r in await conn.fetch(
                "SELECT proname, proconfig FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
            )
        }
        triggers = {
            (r["tgrelid"], r["tgname"])
            for r in await conn.fetch(
                "SELECT tgrelid::regclass::text AS tgrelid, tgname FROM pg_trigger "
                "WHERE NOT tgisinternal"
            )
        }
        hnsw = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_entry_embeddings_hnsw'"
        )
    finally:
        await conn.close()
    assert tables.keys() >= CORE_TABLES | SEARCH_TABLES | SCALING_TABLES
    assert all(tables[name] for name in CORE_TABLES | SEARCH_TABLES | SCALING_TABLES)
    assert tables["entries"] == "Natural language blockchain entries"
    assert indexes >= INDEXES
    assert functions.keys() >= FUNCTIONS
    pinned = {
        name
        for name, config in functions.items()
        if config and any(setting.startswith("search_path=") for setting in config)
    }
    assert pinned >= FUNCTIONS
    assert triggers >= TRIGGERS
    assert "hnsw" in hnsw
    assert "vector_cosine_ops" in hnsw
    assert "m='16'" in hnsw


async def test_every_file_can_run_twice(migrated_database_url: str) -> None:
    """The shipped SQL is idempotent: running each file again by hand is harmless."""
    conn = await asyncpg.connect(migrated_database_url)
    try:
        for migration in load_migrations():
            await conn.execute(migration.sql)
        assert await conn.fetchval("SELECT count(*) FROM chain_state") == 1
    finally:
        await conn.close()


async def test_version_applies_up_to_that_version(database_url: str) -> None:
    """``target`` (the CLI's --version) applies up to that version and nothing after it."""
    await migrate(database_url, target=1)
    assert [r["version"] for r in await ledger_rows(database_url)] == [1]
    tables = await table_names(database_url)
    assert "entries" in tables
    assert "entry_embeddings" not in tables


async def test_skipped_version_is_applied_later_out_of_order(database_url: str) -> None:
    """A version left out with ``skip`` is applied by a later run, below applied ones."""
    await migrate(database_url, skip=[2])
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 3]
    plan = await status(database_url, skip=(2,))
    skipped = plan.entries[1]
    assert (skipped.name, skipped.state) == ("002_add_semantic_search", State.SKIPPED)
    with capture_logs() as events:
        await migrate(database_url)
    assert [r["version"] for r in await ledger_rows(database_url)] == [1, 2, 3]
    applied = [e for e in events if e["event"] == "migration_applied"]
    assert [e["version"] for e in applied] == [2]


async def test_rollback_runs_the_down_file_and_removes_the_record(
    migrated_database_url: str,
) -> None:
    """The last migration's down file and its row removal; a later run applies it again."""
    undone = await rollback(migrated_database_url)
    assert [(r.version, r.ran_down_file) for r in undone] == [(3, True)]
    assert [r["version"] for r in await ledger_rows(migrated_database_url)] == [1, 2]
    assert "scheduled_jobs" not in await table_names(migrated_database_url)
    await migrate(migrated_database_url)
    assert "scheduled_jobs" in await table_names(migrated_database_url)


async def test_seed_three_column_ledger_is_adopted(database_url: str) -> None:
    """What the seed's migrate.py left (001 applied, a three-column table) is taken over."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(load_migrations()[0].sql)
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "name VARCHAR(255) NOT NULL, applied_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP);"
            "INSERT INTO schema_migrations (version, name) VALUES (1, '001_initial_schema')"
        )
    finally:
        await conn.close()
    await migrate(database_url, target=1)
    first = (await status(database_url)).entries[0]
    assert (first.name, first.state, first.verified) == ("001_initial_schema", State.APPLIED, False)
    with capture_logs() as events:
        await migrate(database_url)
    rows = await ledger_rows(database_url)
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert rows[0]["checksum"] is None
    assert rows[1]["checksum"]
    assert any(e["event"] == "ledger_adopted" for e in events)
    assert [e["version"] for e in events if e["event"] == "migration_applied"] == [2, 3]


async def test_file_that_commits_by_itself_is_refused_before_anything_runs(
    database_url: str, tmp_path: Path
) -> None:
    """BEGIN/COMMIT in a transactional file would break its all-or-nothing: refused up front."""
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_ok.sql": "CREATE TABLE ok (id int);\n",
            "002_wrapped.sql": "-- old habit\nBEGIN;\nCREATE TABLE w (id int);\nCOMMIT;\n",
        },
    )
    with pytest.raises(ConfigurationError) as refused:
        await migrate(database_url, migrations_dir=folder)
    assert refused.value.exit_code == ExitCode.USAGE
    assert str(refused.value).startswith("002_wrapped.sql:2: BEGIN inside a migration")
    assert "no-transaction" in str(refused.value)
    assert await table_names(database_url) == set()
