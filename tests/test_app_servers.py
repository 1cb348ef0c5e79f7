"""The example apps under real servers and several workers, against one fresh database."""

from __future__ import annotations

import asyncio

import pytest

from harness.pgcluster import PASSWORD
from harness.servers import AppServer, json_events
from tests.conftest import ledger_rows, migration_locks_held

SERVERS = [
    pytest.param("uvicorn", "examples.fastapi_app:app", 4, id="uvicorn-4-workers"),
    pytest.param("gunicorn", "examples.flask_app:app", 8, id="gunicorn-8-workers"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("server", "app", "workers"), SERVERS)
def test_every_worker_serves_after_the_migrations_applied_exactly_once(
    server: str, app: str, workers: int, database_url: str
) -> None:
    with AppServer(server, app, workers=workers, database_url=database_url) as running:
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
    # Each worker ran migrate() to the end; one of them applied 001-003, once each.
    assert by_name.count("migrate_started") == workers
    assert by_name.count("migrate_done") + by_name.count("up_to_date") == workers
    applied = [event["version"] for event in events if event["event"] == "migration_applied"]
    assert sorted(applied) == [1, 2, 3]
    rows = asyncio.run(ledger_rows(database_url))
    assert [(row["version"], row["complete"]) for row in rows] == [(1, True), (2, True), (3, True)]
    assert "Traceback" not in log
    assert PASSWORD not in log
