"""The example apps under real servers and several workers, against one fresh database."""

from __future__ import annotations

import asyncio

import pytest

from harness.pgcluster import PASSWORD
from harness.servers import AppServer, ServerFailedError, json_events
from harness.sql import execute as sql_execute
from tests.conftest import ledger_rows, migration_locks_held, table_names

# server, app, workers, its options, how many processes run migrate()
SERVERS = [
    pytest.param("uvicorn", "examples.fastapi_app:app", 4, (), 4, id="uvicorn-4-workers"),
    pytest.param("gunicorn", "examples.flask_app:app", 8, (), 8, id="gunicorn-8-workers"),
    # The master imports the app, so migrates, once, before it forks the workers.
    pytest.param(
        "gunicorn", "examples.flask_app:app", 8, ("--preload",), 1, id="gunicorn-8-preload"
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("server", "app", "workers", "options", "migrating"), SERVERS)
def test_every_worker_serves_after_the_migrations_applied_exactly_once(
    server: str,
    app: str,
    workers: int,
    options: tuple[str, ...],
    migrating: int,
    database_url: str,
) -> None:
    with AppServer(
        server, app, workers=workers, database_url=database_url, options=options
    ) as running:
        answers = running.wait_for_all_workers()
        # Every worker the server started answers, none was restarted in its place.
        assert set(answers) == running.started_workers()
        assert len(answers) == workers
        assert {answer["schema_version"] for answer in answers.values()} == {3}
        assert asyncio.run(migration_locks_held(database_url)) == 0
        assert running.process is not None
        assert running.process.poll() is None  # the server itself still up
    log = running.stop()
    events = json_events(log)
    by_name = [event["event"] for event in events]
    # Each process that migrates ran migrate() to the end; one applied 001-003, once each.
    assert by_name.count("migrate_started") == migrating
    assert by_name.count("migrate_done") + by_name.count("up_to_date") == migrating
    applied = [event["version"] for event in events if event["event"] == "migration_applied"]
    assert sorted(applied) == [1, 2, 3]
    rows = asyncio.run(ledger_rows(database_url))
    assert [(row["version"], row["complete"]) for row in rows] == [(1, True), (2, True), (3, True)]
    assert "Traceback" not in log
    assert PASSWORD not in log


@pytest.mark.slow
@pytest.mark.parametrize(("server", "app", "workers", "options", "migrating"), SERVERS[:2])
def test_a_server_whose_migrations_fail_stops_without_serving(
    server: str,
    app: str,
    workers: int,
    options: tuple[str, ...],
    migrating: int,
    database_url: str,
) -> None:
    """Drift (an applied file that changed since): no worker serves, the server stops,
    its log carries our sentence, and nothing is applied. (A row above the newest file is
    a newer release's, not drift: see test_future_migrations.py.)"""
    asyncio.run(
        sql_execute(
            database_url,
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text, "
            "applied_at timestamptz DEFAULT now(), checksum text); "
            "INSERT INTO schema_migrations (version, name, checksum) "
            "VALUES (1, '001_initial_schema', 'edited')",
        )
    )
    running = AppServer(server, app, workers=workers, database_url=database_url).start()
    try:
        with pytest.raises(ServerFailedError, match="exited"):
            running.wait_for_all_workers()
    finally:
        log = running.stop()
    assert "migration 001 was applied with a different checksum" in log
    assert running.process is not None
    if server == "gunicorn":
        assert running.process.returncode != 0  # "Worker failed to boot"
    else:  # uvicorn 0.54 stops the parent "because a child failed to start", yet exits 0
        assert running.process.returncode == 0
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1]
    assert asyncio.run(table_names(database_url)) == {"schema_migrations"}
    assert PASSWORD not in log
