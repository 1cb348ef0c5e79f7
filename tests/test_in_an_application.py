"""README's "In an application": its snippets as pasted, the pool's order, and where logs go."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from fastapi import FastAPI
from pgvector import Vector
from pgvector.asyncpg import register_vector

import natlangchain_migrate
from harness.servers.pgcluster import PASSWORD
from natlangchain_migrate import migrate, route_to_stdlib_logging
from tests.conftest import ledger_rows

ROOT = Path(__file__).resolve().parent.parent


def readme_snippets(section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of README.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {section}\n")
    end = readme.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.DOTALL)


# Runs one snippet as a file, then, if it defines a FastAPI lifespan, starts and stops an
# app with it, as a server would.
_DRIVER = """
import asyncio, runpy, sys
from fastapi import FastAPI
namespace = runpy.run_path(sys.argv[1])
if "lifespan" in namespace:
    async def serve_once():
        async with namespace["lifespan"](FastAPI()):
            pass
    asyncio.run(serve_once())
"""

SNIPPETS = readme_snippets("In an application")


def test_the_section_has_its_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{n}" for n in range(len(SNIPPETS))])
def test_each_readme_snippet_migrates_a_fresh_database_as_pasted(
    snippet: str, database_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATLANGCHAIN_MIGRATE_")}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(script)],
        env=env | {"DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1, 2, 3]


@pytest.fixture
def clean_logging_config() -> Iterator[None]:
    """structlog at its defaults and the root logger untouched during the test, and
    whatever configuration there was before restored after it."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    structlog.reset_defaults()
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**saved)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def our_records() -> Iterator[_Records]:
    """The records that reach the ``natlangchain_migrate`` stdlib logger, at INFO."""
    logger = logging.getLogger("natlangchain_migrate")
    handler = _Records()
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)


@pytest.mark.anyio
@pytest.mark.usefixtures("clean_logging_config")
async def test_migrate_configures_neither_structlog_nor_logging(database_url: str) -> None:
    root = logging.getLogger()
    handlers_before = root.handlers[:]
    await migrate(database_url)
    assert not structlog.is_configured()
    assert root.handlers == handlers_before


@pytest.mark.anyio
@pytest.mark.usefixtures("clean_logging_config")
async def test_events_go_through_the_apps_own_structlog_configuration(database_url: str) -> None:
    """An app with its own structlog set-up: our events pass through its processors."""
    output = io.StringIO()

    def add_service(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["service"] = "api"
        return event

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            add_service,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(output),
    )
    app_config = structlog.get_config()
    assert route_to_stdlib_logging() is False  # the app's configuration stands

    await migrate(database_url)

    events = [json.loads(line) for line in output.getvalue().splitlines()]
    applied = [e for e in events if e["event"] == "migration_applied"]
    assert [e["version"] for e in applied] == [1, 2, 3]
    assert {(e["service"], e["level"]) for e in applied} == {("api", "info")}
    assert structlog.get_config() == app_config
    assert PASSWORD not in output.getvalue()


@pytest.mark.anyio
@pytest.mark.usefixtures("clean_logging_config")
async def test_route_to_stdlib_logging_makes_each_event_a_record_of_our_logger(
    database_url: str, our_records: _Records
) -> None:
    assert route_to_stdlib_logging() is True

    await migrate(database_url)

    events = [(record.levelno, json.loads(record.getMessage())) for record in our_records.records]
    assert {record.name for record in our_records.records} == {"natlangchain_migrate"}
    applied = [e["version"] for level, e in events if e["event"] == "migration_applied"]
    assert applied == [1, 2, 3]
    assert {level for level, _ in events} == {logging.INFO}
    assert all(PASSWORD not in record.getMessage() for record in our_records.records)


@pytest.mark.anyio
@pytest.mark.usefixtures("clean_logging_config")
async def test_routed_events_below_the_loggers_level_are_dropped(
    database_url: str, our_records: _Records
) -> None:
    """The app's logging levels decide: at WARNING, a clean run logs nothing."""
    route_to_stdlib_logging()
    logging.getLogger("natlangchain_migrate").setLevel(logging.WARNING)
    await migrate(database_url)
    assert our_records.records == []
    assert len(await ledger_rows(database_url)) == 3


@pytest.mark.anyio
async def test_a_pool_with_the_vector_codec_cannot_open_before_the_migrations(
    database_url: str,
) -> None:
    """Why the examples migrate first: 002 creates the type the pool's init= looks up."""
    with pytest.raises(ValueError, match=r"unknown type: public\.vector"):
        await asyncpg.create_pool(database_url, init=register_vector, min_size=1)
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, init=register_vector, min_size=1)
    try:
        assert (await pool.fetchval("SELECT '[1,2]'::vector")).to_list() == [1.0, 2.0]
    finally:
        await pool.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("clean_logging_config")
async def test_fastapi_example_migrates_then_opens_a_pool_that_decodes_vectors(
    database_url: str, monkeypatch: pytest.MonkeyPatch, our_records: _Records
) -> None:
    from examples import fastapi_app

    monkeypatch.setenv("DATABASE_URL", database_url)
    app = FastAPI()
    async with fastapi_app.lifespan(app), app.state.pool.acquire() as conn:
        vector = await conn.fetchval("SELECT '[1,2,3]'::vector")
        version = await conn.fetchval(fastapi_app.SCHEMA_VERSION)
    assert isinstance(vector, Vector)  # decoded by the codec, not left as text
    assert vector.to_list() == [1.0, 2.0, 3.0]
    assert version == 3
    assert natlangchain_migrate.route_to_stdlib_logging() is False  # the example routed them
    assert any('"migration_applied"' in record.getMessage() for record in our_records.records)
