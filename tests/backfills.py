"""What the backfill tests share (test_backfill.py, test_backfill_waits.py): a table of
ROWS rows, a backfill file over it that changes each row in a way a second change shows,
the check that every row changed exactly once, the rows a run has recorded as done, and
the CLI started on a folder as a process of its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncpg

from tests.conftest import fetchval, start_cli, write_migrations

ROWS = 20_000
TABLE = (
    "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, touched int NOT NULL DEFAULT 0);\n"
    f"INSERT INTO big (id, v) SELECT g, g % 97 FROM generate_series(1, {ROWS}) g;\n"
)
FILL = (
    "-- natlangchain: backfill table=big key=id {settings}\n"
    "UPDATE big SET touched = touched + 1, v = v * 2 WHERE id BETWEEN :lo AND :hi;\n"
)


def backfill_folder(tmp_path: Path, settings: str) -> Path:
    """001 makes the table, 002 backfills it with ``settings`` on its directive line."""
    return write_migrations(
        tmp_path / "m",
        {"001_big.sql": TABLE, "002_fill.sql": FILL.format(settings=settings)},
    )


async def changed_once(url: str) -> bool:
    """Every row touched once and its value doubled once: none missed, none twice."""
    return bool(
        await fetchval(url, "SELECT count(*) = 0 FROM big WHERE touched <> 1 OR v <> (id % 97) * 2")
    )


async def rows_done(url: str) -> int:
    """The rows the backfill in progress has recorded as done (0 before it starts and
    after it ends, when schema_backfills is absent or empty)."""
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('schema_backfills') IS NOT NULL"):
            return 0
        return int(await conn.fetchval("SELECT coalesce(max(rows_done), 0) FROM schema_backfills"))
    finally:
        await conn.close()


def start_run(folder: Path, url: str, *, output: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """``natlangchain-migrate --migrations-dir FOLDER`` on ``url``, started, not waited for
    (``output=subprocess.DEVNULL`` when nobody reads its logs)."""
    return start_cli("--migrations-dir", str(folder), database_url=url, output=output)
