"""OpenTelemetry spans (the otel extra), read back with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from harness.pgcluster import PASSWORD
from natlangchain_migrate import LockTimeoutError, MigrateError, MigrationFailedError, migrate
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import NOTIFY_CHANNEL, default_namespace, lock_key
from natlangchain_migrate.telemetry import LOCK_WAIT_SPAN, MIGRATION_SPAN, OUTCOME, RUN_SPAN
from tests.conftest import write_migrations

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _tracer_provider() -> None:
    """The process's one TracerProvider (OpenTelemetry allows setting it once)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans(_tracer_provider: None) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _everything_said(exporter: InMemorySpanExporter) -> str:
    """Every attribute, event attribute and status text of every span, as one string."""
    parts: list[Any] = []
    for span in exporter.get_finished_spans():
        parts += [span.name, span.status.description, *dict(span.attributes or {}).items()]
        for event in span.events:
            parts += [event.name, *dict(event.attributes or {}).items()]
    return repr(parts)


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _has(span: ReadableSpan, expected: dict[str, Any]) -> bool:
    """True when the span has each of ``expected``'s attributes with that value."""
    return {key: _attributes(span).get(key) for key in expected} == expected


async def test_a_run_has_one_span_with_a_lock_wait_and_one_per_migration(
    spans: InMemorySpanExporter, database_url: str
) -> None:
    assert PASSWORD in database_url  # the DSN carries a password, which no span may
    await migrate(database_url)
    (run,) = _named(spans, RUN_SPAN)
    (lock,) = _named(spans, LOCK_WAIT_SPAN)
    migrations = _named(spans, MIGRATION_SPAN)
    database = database_url.rsplit("/", 1)[1]
    assert _has(
        run,
        {
            "db.system": "postgresql",
            "db.namespace": database,
            "server.address": "127.0.0.1",
            OUTCOME: "applied",
            "natlangchain_migrate.applied_count": 3,
        },
    )
    assert _attributes(run)["natlangchain_migrate.duration_ms"] > 0
    assert run.status.status_code is StatusCode.UNSET
    assert _attributes(lock)[OUTCOME] == "acquired"
    assert _attributes(lock)["natlangchain_migrate.lock_wait_ms"] >= 0
    assert [
        (a["natlangchain_migrate.version"], a["natlangchain_migrate.name"], a[OUTCOME])
        for a in map(_attributes, migrations)
    ] == [
        (1, "001_initial_schema", "applied"),
        (2, "002_add_semantic_search", "applied"),
        (3, "003_add_scaling_tables", "applied"),
    ]
    assert all(_attributes(m)["natlangchain_migrate.duration_ms"] > 0 for m in migrations)
    assert all(_attributes(m)["db.namespace"] == database for m in migrations)
    assert run.context is not None
    assert {span.parent.span_id for span in [lock, *migrations] if span.parent} == {
        run.context.span_id
    }
    assert PASSWORD not in _everything_said(spans)


async def test_an_up_to_date_run_is_one_span_and_takes_no_lock(
    spans: InMemorySpanExporter, migrated_database_url: str
) -> None:
    await migrate(migrated_database_url)
    assert [span.name for span in spans.get_finished_spans()] == [RUN_SPAN]
    (run,) = _named(spans, RUN_SPAN)
    assert _attributes(run)[OUTCOME] == "up_to_date"


async def test_a_failed_migration_is_an_error_span_without_the_password(
    spans: InMemorySpanExporter, database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"001_a.sql": "CREATE TABLE a (id int);\n", "002_b.sql": "SELECT 1;\nSELEC 2;\n"},
    )
    with pytest.raises(MigrationFailedError):
        await migrate(database_url, migrations_dir=folder)
    first, second = _named(spans, MIGRATION_SPAN)
    assert _attributes(first)[OUTCOME] == "applied"
    assert second.status.status_code is StatusCode.ERROR
    assert _has(
        second,
        {
            OUTCOME: "failed",
            "error.type": "MigrationFailedError",
            "natlangchain_migrate.sqlstate": "42601",
            "natlangchain_migrate.location": "002_b.sql:2:1",
        },
    )
    assert [event.name for event in second.events] == ["exception"]
    (run,) = _named(spans, RUN_SPAN)
    assert run.status.status_code is StatusCode.ERROR
    assert PASSWORD not in _everything_said(spans)


async def test_a_rejected_password_is_an_error_span_that_does_not_repeat_it(
    spans: InMemorySpanExporter, admin_url: str
) -> None:
    wrong = "Wr0ng-pw-never-in-a-span"
    dsn = admin_url.replace(PASSWORD, wrong)
    with pytest.raises(MigrateError):
        await migrate(dsn)
    (run,) = _named(spans, RUN_SPAN)
    assert run.status.status_code is StatusCode.ERROR
    assert _attributes(run)["error.type"] == "ConnectionRejectedError"
    said = _everything_said(spans)
    assert wrong not in said
    assert PASSWORD not in said


async def test_a_lock_wait_that_times_out_says_how_long_it_waited(
    spans: InMemorySpanExporter, database_url: str
) -> None:
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(default_namespace("public")))
        with pytest.raises(LockTimeoutError):
            await migrate(database_url, lock_timeout=0.3)
    finally:
        await holder.close()
    (lock,) = _named(spans, LOCK_WAIT_SPAN)
    assert lock.status.status_code is StatusCode.ERROR
    assert _attributes(lock)[OUTCOME] == "timeout"
    assert _attributes(lock)["natlangchain_migrate.lock_wait_ms"] >= 300


def test_a_process_without_tracing_never_imports_opentelemetry(database_url: str) -> None:
    """Installed but not imported by the app (the CLI, an app without tracing): a run
    applies as ever and loads none of it."""
    code = (
        "import asyncio, sys\n"
        "from natlangchain_migrate import migrate\n"
        f"report = asyncio.run(migrate({database_url!r}))\n"
        "print(len(report.applied), sorted(m for m in sys.modules if 'opentelemetry' in m))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "3 []"


async def test_transaction_lock_mode_has_the_same_spans(
    spans: InMemorySpanExporter, database_url: str
) -> None:
    await migrate(database_url, lock_mode="transaction")
    (lock,) = _named(spans, LOCK_WAIT_SPAN)
    assert _has(lock, {OUTCOME: "acquired", "natlangchain_migrate.lock_mode": "transaction"})
    assert [_attributes(m)[OUTCOME] for m in _named(spans, MIGRATION_SPAN)] == ["applied"] * 3


async def _until_a_runner_polls_the_lock(conn: asyncpg.Connection) -> None:
    """Return once another session has tried the advisory lock (pg_stat_activity keeps
    an idle session's last query)."""
    while True:
        polled = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_try_advisory_lock%' "
            "AND pid <> pg_backend_pid() AND datname = current_database()"
        )
        if polled:
            return
        await anyio.sleep(0.01)


async def test_a_waiter_that_finds_the_work_done_ends_its_lock_wait_as_not_needed(
    spans: InMemorySpanExporter, database_url: str
) -> None:
    """Another runner (here a session that holds the lock and applies by hand) finishes
    while ours waits: the wait ends without the lock, and is no error."""
    key = lock_key(default_namespace("public"))
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        async with anyio.create_task_group() as group:
            group.start_soon(migrate, database_url)
            await _until_a_runner_polls_the_lock(holder)
            ledger = Ledger("public")
            await ledger.ensure(holder)
            for migration in load_migrations():
                await holder.execute(
                    migration.sql + "\n;\n" + ledger.record_sql(migration, applied_by="x")
                )
            await holder.execute(
                "SELECT pg_advisory_unlock($1), pg_notify($2, $3)", key, NOTIFY_CHANNEL, str(key)
            )
    finally:
        await holder.close()
    (lock,) = _named(spans, LOCK_WAIT_SPAN)
    assert _attributes(lock)[OUTCOME] == "not_needed"
    assert lock.status.status_code is StatusCode.UNSET
    (run,) = _named(spans, RUN_SPAN)
    assert _has(run, {OUTCOME: "up_to_date", "natlangchain_migrate.applied_count": 0})
