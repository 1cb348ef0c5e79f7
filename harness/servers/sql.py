"""One-shot SQL on a fresh connection, for tests, benchmarks and the fault harness: the
view from outside the runner, as an operator with psql would have it."""

from __future__ import annotations

import asyncpg


async def execute(url: str, sql: str) -> None:
    """Run ``sql`` (one or more statements) and close."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    """The rows of ``sql``."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def fetchval(url: str, sql: str) -> object:
    """The first column of the first row of ``sql``."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()
