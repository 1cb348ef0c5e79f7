"""A FastAPI app whose lifespan applies the migrations before it serves.

    DATABASE_URL=postgresql://... uvicorn examples.fastapi_app:app --workers 4

Every worker runs the lifespan: the first takes the advisory lock and applies
what is pending, the others wait for it and find the work done. Only then is the
pool created, because its ``init=`` registers pgvector's codec, and the
``vector`` type exists only once migration 002 has run: on a fresh database a
pool created first fails with ``ValueError: unknown type: public.vector``.

While a worker serves, ``heartbeat()`` keeps it in the replica registry with the
release it ships, so a contract part (``NNN_name.contract.sql``) that drops what this
release still reads waits until it is gone. ``NATLANGCHAIN_MIGRATE_DIR`` picks another
migrations folder, ``NATLANGCHAIN_MIGRATE_AUTO_CONTRACT=1`` runs the allowed contract
parts at start-up, and ``HEARTBEAT_INTERVAL`` (seconds, default 15) sets the beat.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from pgvector.asyncpg import register_vector

import natlangchain_migrate

# The highest version applied whole (an interrupted no-transaction file is not).
SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations WHERE complete"


async def open_pool(dsn: str) -> asyncpg.Pool:
    """The app's pool: each connection decodes a ``vector`` column as ``pgvector.Vector``."""
    return await asyncpg.create_pool(dsn, init=register_vector, min_size=1, max_size=5)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # uvicorn configures its own loggers only: give ours a handler, at INFO.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
    )
    natlangchain_migrate.route_to_stdlib_logging()
    dsn = os.environ["DATABASE_URL"]
    folder = os.environ.get("NATLANGCHAIN_MIGRATE_DIR")  # default: the shipped migrations
    await natlangchain_migrate.migrate(dsn, migrations_dir=folder)  # first: 002 makes `vector`
    app.state.pool = await open_pool(dsn)  # then: the pool whose codec needs it
    interval = float(os.environ.get("HEARTBEAT_INTERVAL", "15"))
    try:
        # Serving: this replica is in the registry, so contract parts wait for it.
        async with natlangchain_migrate.heartbeat(dsn, migrations_dir=folder, interval=interval):
            yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz(request: Request) -> dict[str, object]:
    """Up, with the schema version this worker reads and which worker answered."""
    async with request.app.state.pool.acquire() as conn:
        version = await conn.fetchval(SCHEMA_VERSION)
    return {"status": "ok", "schema_version": version, "pid": os.getpid()}
