"""The benchmark's floor for examples/fastapi_app.py: the same app whose lifespan does not
migrate (the database it is given is already migrated)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import natlangchain_migrate
from examples.fastapi_app import healthz, open_pool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
    )
    natlangchain_migrate.route_to_stdlib_logging()
    app.state.pool = await open_pool(os.environ["DATABASE_URL"])
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan)
app.get("/healthz")(healthz)
