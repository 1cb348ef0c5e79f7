"""The schema works as NatLangChain's API uses it: keys, cascades, triggers, functions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest
from pgvector.asyncpg import register_vector

from natlangchain_migrate import migrate

pytestmark = pytest.mark.anyio


@pytest.fixture
async def conn(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The schema as the runner leaves it (a clone of the session's migrated template)."""
    report = await migrate(migrated_database_url)
    assert report.up_to_date
    connection = await asyncpg.connect(migrated_database_url)
    await register_vector(connection)
    try:
        yield connection
    finally:
        await connection.close()


async def _entry(conn: asyncpg.Connection, entry_id: str, content: str = "x") -> object:
    return await conn.fetchval(
        "INSERT INTO entries (entry_id, content, author) VALUES ($1, $2, 'alice') RETURNING id",
        entry_id,
        content,
    )


async def test_deleting_an_entry_cascades_to_its_block_links_and_validations(
    conn: asyncpg.Connection,
) -> None:
    entry = await _entry(conn, "e1")
    block = await conn.fetchval(
        "INSERT INTO blocks (block_index, timestamp, previous_hash, hash) "
        "VALUES (0, now(), '0', 'h0') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO block_entries (block_id, entry_id, position) VALUES ($1, $2, 0)", block, entry
    )
    await conn.execute(
        "INSERT INTO validation_results (entry_id, validator_type, is_valid, confidence) "
        "VALUES ($1, 'pou', true, 0.9500)",
        entry,
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO block_entries (block_id, entry_id, position) VALUES ($1, $2, 1)",
            block,
            entry,
        )
    await conn.execute("DELETE FROM entries WHERE id = $1", entry)
    assert await conn.fetchval("SELECT count(*) FROM block_entries") == 0
    assert await conn.fetchval("SELECT count(*) FROM validation_results") == 0


async def test_dispute_keeps_its_row_when_contract_is_deleted(conn: asyncpg.Connection) -> None:
    contract = await conn.fetchval(
        "INSERT INTO contracts (contract_id, content, created_by) VALUES ('c1', 'terms', 'bob') "
        "RETURNING id"
    )
    await conn.execute(
        "INSERT INTO disputes (dispute_id, contract_id, claimant, claim) "
        "VALUES ('d1', $1, 'carol', 'late')",
        contract,
    )
    await conn.execute("DELETE FROM contracts WHERE id = $1", contract)
    assert await conn.fetchval("SELECT contract_id FROM disputes WHERE dispute_id = 'd1'") is None
    row = await conn.fetchrow("SELECT status, parties, terms, metadata FROM contracts LIMIT 1")
    assert row is None


async def test_chain_state_is_a_seeded_singleton(conn: asyncpg.Connection) -> None:
    row = await conn.fetchrow("SELECT id, chain_id FROM chain_state")
    assert row is not None
    assert row["id"] == 1
    assert len(row["chain_id"]) == 32
    int(row["chain_id"], 16)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO chain_state (id, chain_id) VALUES (2, 'x')")


async def test_update_trigger_moves_updated_at(conn: asyncpg.Connection) -> None:
    entry = await _entry(conn, "e1")
    await conn.execute("UPDATE entries SET updated_at = '2000-01-01' WHERE id = $1", entry)
    # The trigger overrides any value the UPDATE sets: it is always "now".
    stamp = await conn.fetchval("SELECT updated_at FROM entries WHERE id = $1", entry)
    assert stamp.year > 2000
    before = await conn.fetchval("SELECT updated_at FROM chain_state")
    await asyncio.sleep(0.01)
    await conn.execute("UPDATE chain_state SET block_count = 1")
    assert await conn.fetchval("SELECT updated_at FROM chain_state") > before


async def test_search_similar_entries_returns_nearest_first(conn: asyncpg.Connection) -> None:
    rng = np.random.default_rng(7)
    query = rng.normal(size=384).astype(np.float32)
    near = query + rng.normal(scale=0.1, size=384).astype(np.float32)
    far = rng.normal(size=384).astype(np.float32)
    opposite = -query
    for name, vector in (("near", near), ("far", far), ("opposite", opposite)):
        entry = await _entry(conn, name, content=name)
        await conn.execute(
            "INSERT INTO entry_embeddings (entry_id, embedding) VALUES ($1, $2)", entry, vector
        )
    rows = await conn.fetch("SELECT * FROM search_similar_entries($1, 10, -1.0)", query)
    assert next(r["content"] for r in rows) == "near"
    assert [r["content"] for r in rows][-1] == "opposite"
    assert rows[0]["similarity"] > 0.9
    above_half = await conn.fetch("SELECT content FROM search_similar_entries($1)", query)
    assert [r["content"] for r in above_half] == ["near"]


async def test_search_similar_contracts_uses_full_sections_only(conn: asyncpg.Connection) -> None:
    vector = np.ones(384, dtype=np.float32)
    contract = await conn.fetchval(
        "INSERT INTO contracts (contract_id, title, content, created_by) "
        "VALUES ('c1', 'Lease', 'text', 'bob') RETURNING id"
    )
    for section in ("full", "terms"):
        await conn.execute(
            "INSERT INTO contract_embeddings (contract_id, section, embedding) VALUES ($1, $2, $3)",
            contract,
            section,
            vector,
        )
    rows = await conn.fetch("SELECT * FROM search_similar_contracts($1)", vector)
    assert [(r["title"], round(r["similarity"], 3)) for r in rows] == [("Lease", 1.0)]


async def test_two_workers_never_claim_the_same_job(
    migrated_database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO scheduled_jobs (job_name, job_type, scheduled_for, priority) "
        "SELECT 'job' || i, 'email', now() - interval '1 minute', i % 3 "
        "FROM generate_series(1, 40) i"
    )
    workers = [await asyncpg.connect(migrated_database_url) for _ in range(2)]

    async def drain(worker: asyncpg.Connection, name: str) -> list[object]:
        claimed = []
        while job := await worker.fetchval("SELECT claim_job($1, ARRAY['email'])", name):
            claimed.append(job)
        return claimed

    try:
        first, second = await asyncio.gather(drain(workers[0], "w1"), drain(workers[1], "w2"))
    finally:
        for worker in workers:
            await worker.close()
    assert len(first) + len(second) == 40
    assert not set(first) & set(second)
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM scheduled_jobs WHERE status = 'running' AND locked_by IS NOT NULL"
        )
        == 40
    )
    assert await conn.fetchval("SELECT claim_job('w3', ARRAY['other'])") is None


async def test_claim_job_takes_highest_priority_due_job(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO scheduled_jobs (job_name, job_type, scheduled_for, priority) VALUES "
        "('low', 't', now() - interval '1 hour', 0), ('high', 't', now() - interval '1 minute', 5),"
        "('future', 't', now() + interval '1 hour', 9)"
    )
    job = await conn.fetchval("SELECT claim_job('w1')")
    assert await conn.fetchval("SELECT job_name FROM scheduled_jobs WHERE id = $1", job) == "high"


async def test_distributed_lock_is_exclusive_renewable_and_releasable(
    conn: asyncpg.Connection,
) -> None:
    assert await conn.fetchval("SELECT acquire_lock('leader', 'a', 30)") is True
    assert await conn.fetchval("SELECT acquire_lock('leader', 'b', 30)") is False
    assert await conn.fetchval("SELECT acquire_lock('leader', 'a', 60)") is True
    assert await conn.fetchval("SELECT release_lock('leader', 'b')") is False
    assert await conn.fetchval("SELECT release_lock('leader', 'a')") is True
    assert await conn.fetchval("SELECT acquire_lock('leader', 'b', 30)") is True
    await conn.execute("UPDATE distributed_locks SET expires_at = now() - interval '1 second'")
    assert await conn.fetchval("SELECT acquire_lock('leader', 'c', 30)") is True


async def test_cache_values_expire(conn: asyncpg.Connection) -> None:
    await conn.execute("""SELECT cache_set('k', '{"v": 1}'::jsonb, 1)""")
    await conn.execute("""SELECT cache_set('forever', '[1]'::jsonb)""")
    assert await conn.fetchval("SELECT cache_get('k')") == '{"v": 1}'
    await asyncio.sleep(1.1)
    assert await conn.fetchval("SELECT cache_get('k')") is None
    assert await conn.fetchval("SELECT cache_get('forever')") == "[1]"
    assert await conn.fetchval("SELECT cache_delete('forever')") is True
    assert await conn.fetchval("SELECT cache_delete('forever')") is False


async def test_cleanup_expired_data_reports_rows_per_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO distributed_locks (lock_name, owner_id, expires_at) "
        "VALUES ('old', 'a', now() - interval '1 minute'),"
        " ('live', 'a', now() + interval '1 hour');"
        "INSERT INTO cache_entries (cache_key, cache_value, expires_at) "
        "VALUES ('old', '1', now() - interval '1 minute');"
        "INSERT INTO metrics_snapshots (metric_name, metric_type, metric_value, recorded_at) "
        "VALUES ('m', 'gauge', 1, now() - interval '8 days'), ('m', 'gauge', 2, now());"
        "INSERT INTO instance_registry (instance_id, host, port, started_at, last_heartbeat) "
        "VALUES ('gone', 'h', 1, now(), now() - interval '6 minutes');"
        "INSERT INTO scheduled_jobs (job_name, job_type, scheduled_for, status, completed_at) "
        "VALUES ('j', 't', now(), 'completed', now() - interval '8 days'),"
        " ('k', 't', now(), 'pending', NULL)"
    )
    rows = {
        r["table_name"]: r["rows_deleted"]
        for r in await conn.fetch("SELECT * FROM cleanup_expired_data()")
    }
    assert rows == {
        "distributed_locks": 1,
        "cache_entries": 1,
        "metrics_snapshots": 1,
        "instance_registry": 1,
        "scheduled_jobs": 1,
    }
    assert await conn.fetchval("SELECT count(*) FROM scheduled_jobs") == 1
