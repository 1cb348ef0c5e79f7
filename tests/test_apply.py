"""Applying NatLangChain's migrations to a real PostgreSQL: once, completely, then never again."""

from __future__ import annotations

import asyncpg
import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import migrate
from tests.conftest import ledger_rows

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


async def test_second_run_applies_nothing_and_writes_nothing(database_url: str) -> None:
    """Up to date: no migration applied, the ledger untouched, an up_to_date event."""
    await migrate(database_url)
    before = await ledger_rows(database_url)
    with capture_logs() as events:
        report = await migrate(database_url)
    assert report.applied == []
    assert report.up_to_date
    assert report.already_applied == [1, 2, 3]
    assert await ledger_rows(database_url) == before
    names = [e["event"] for e in events]
    assert "up_to_date" in names
    assert "lock_acquired" not in names


async def test_every_object_of_the_data_model_exists(database_url: str) -> None:
    """Tables, indexes, functions, triggers and comments of SCHEMA.md are all there."""
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
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


async def test_every_file_can_run_twice(database_url: str) -> None:
    """The shipped SQL is idempotent: running each file again by hand is harmless."""
    await migrate(database_url)
    from natlangchain_migrate.discovery import load_migrations

    conn = await asyncpg.connect(database_url)
    try:
        for migration in load_migrations():
            await conn.execute(migration.sql)
        assert await conn.fetchval("SELECT count(*) FROM chain_state") == 1
    finally:
        await conn.close()
