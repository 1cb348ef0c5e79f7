"""Baseline files (``NNN_name.baseline.sql``): a new database applies the newest one in
place of the versions it covers, then the versions above it; a database with any
versioned row ignores it; status, drift, rollback and the manifest after it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import pytest

from harness.faults.history import write_history
from harness.servers.pgcluster import PASSWORD
from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import discovery, layouts, migrate, schema_dump
from natlangchain_migrate.baseline_files import schema_line
from natlangchain_migrate.discovery import shipped_migrations_dir
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.manifest import MANIFEST_NAME, stale_files, write_manifest
from tests.conftest import (
    fetchval,
    ledger_rows,
    log_events,
    migration_locks_held,
    run_cli,
    table_names,
    write_migrations,
)

# Each versioned file leaves a trace in ran (which file ran), and is not idempotent.
HISTORY = {
    "001_items.sql": "CREATE TABLE ran (file text);\nINSERT INTO ran VALUES ('001');\n"
    "CREATE TABLE items (id serial PRIMARY KEY, name text);\n",
    "001_items.down.sql": "DROP TABLE items;\nDROP TABLE ran;\n",
    "002_tags.sql": "INSERT INTO ran VALUES ('002');\n"
    "CREATE TABLE tags (id int PRIMARY KEY, item int REFERENCES items);\n",
    "002_tags.down.sql": "DROP TABLE tags;\n",
    "003_index.sql": "INSERT INTO ran VALUES ('003');\nCREATE INDEX tags_item ON tags (item);\n",
    "003_index.down.sql": "DROP INDEX tags_item;\n",
}
# What 001-003 leave, as a baseline file says it (no row in ran: the files did not run).
BASELINE = (
    "CREATE TABLE ran (file text);\n"
    "CREATE TABLE items (id serial PRIMARY KEY, name text);\n"
    "CREATE TABLE tags (id int PRIMARY KEY, item int REFERENCES items);\n"
    "CREATE INDEX tags_item ON tags (item);\n"
)
ABOVE = {
    "004_notes.sql": "INSERT INTO ran VALUES ('004');\nCREATE TABLE notes (body text);\n",
    "004_notes.down.sql": "DROP TABLE notes;\n",
}


def _cli(folder: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("--migrations-dir", str(folder), *args, database_url=url)
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _ran(url: str) -> list[str]:
    return list(asyncio.run(fetchval(url, "SELECT array_agg(file ORDER BY file) FROM ran")) or [])


def _rows(url: str) -> list[tuple[int, str, str]]:
    return [(int(r["version"]), r["name"], r["applied_by"]) for r in asyncio.run(ledger_rows(url))]


def _folder(tmp_path: Path, *, squash: bool = False, above: bool = True) -> Path:
    files = {} if squash else dict(HISTORY)
    files["003_schema.baseline.sql"] = BASELINE
    if above:
        files |= ABOVE
    return write_migrations(tmp_path / "migrations", files)


def test_a_new_database_applies_the_baseline_instead_of_the_versions_it_covers(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    result = _cli(folder, database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert _ran(database_url) == ["004"]  # 001-003 did not run; 004 did
    assert {"items", "tags", "notes"} <= asyncio.run(table_names(database_url))
    rows = _rows(database_url)
    assert [(v, name) for v, name, _ in rows] == [
        (1, "001_items"),
        (2, "002_tags"),
        (3, "003_index"),
        (4, "004_notes"),
    ]
    assert {by for v, _, by in rows if v <= 3} == {"baseline-file:003"}
    applying = [e for e in log_events(result.stderr) if e["event"] == "migration_applying"]
    assert [e["name"] for e in applying] == ["003_schema.baseline", "004_notes"]
    again = _cli(folder, database_url, "--check")
    assert again.returncode == ExitCode.OK, again.stdout + again.stderr


@pytest.mark.anyio
async def test_a_database_that_has_every_covered_version_ignores_the_baseline(
    tmp_path: Path, database_url: str
) -> None:
    folder = write_migrations(tmp_path / "m", HISTORY)
    await migrate(database_url, migrations_dir=folder)
    write_migrations(folder, {"003_schema.baseline.sql": BASELINE} | ABOVE)
    report = await migrate(database_url, migrations_dir=folder)
    assert [(r.version, r.name) for r in report.applied] == [(4, "004_notes")]
    assert await _ran_async(database_url) == ["001", "002", "003", "004"]
    assert not any(by.startswith("baseline-file") for _, _, by in await _rows_async(database_url))


# pg_dump's data section for items, as reference data a baseline file may carry.
COPY_ITEMS = "COPY items (id, name) FROM stdin;\n1\tfirst\n2\t\\N\n\\.\n"


@pytest.mark.anyio
@pytest.mark.parametrize("big", [False, True], ids=["copy-data", "big"])
@pytest.mark.parametrize("squash", [False, True], ids=["files-here", "squashed"])
async def test_a_baseline_with_copy_data_or_big_is_streamed_as_any_file(
    big: bool, squash: bool, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline file was read whole and sent as one message: its COPY rows were refused
    ("add them": they were there) and a big one was held in memory on every start-up.
    Now it takes the streamed path; the row of its own version has its file's checksum."""
    if big:
        monkeypatch.setattr(discovery, "STREAM_BYTES", 0)
    folder = _folder(tmp_path, squash=squash)
    (folder / "003_schema.baseline.sql").write_text(BASELINE + COPY_ITEMS)
    baseline = discovery.read_migration_file(3, folder / "003_schema.baseline.sql")
    assert baseline.source is not None
    assert baseline.sql == ""
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.name for r in report.applied] == ["003_schema.baseline", "004_notes"]
    names = await fetchval(database_url, "SELECT array_agg(name ORDER BY id) FROM items")
    assert list(names) == ["first", None]
    rows = await _rows_async(database_url)
    assert [v for v, _, _ in rows] == ([3, 4] if squash else [1, 2, 3, 4])
    if squash:
        checksum = await fetchval(database_url, "SELECT checksum FROM schema_migrations LIMIT 1")
        assert checksum == discovery.checksum(BASELINE + COPY_ITEMS)
    assert (await migrate(database_url, migrations_dir=folder)).applied == []


@pytest.mark.anyio
async def test_a_partially_migrated_database_replays_the_rest_and_ignores_the_baseline(
    tmp_path: Path, database_url: str
) -> None:
    folder = write_migrations(tmp_path / "m", HISTORY)
    await migrate(database_url, migrations_dir=folder, target=1)
    write_migrations(folder, {"003_schema.baseline.sql": BASELINE} | ABOVE)
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.name for r in report.applied] == ["002_tags", "003_index", "004_notes"]
    assert await _ran_async(database_url) == ["001", "002", "003", "004"]


@pytest.mark.anyio
async def test_a_target_below_the_baseline_replays_the_files(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    report = await migrate(database_url, migrations_dir=folder, target=2)
    assert [r.name for r in report.applied] == ["001_items", "002_tags"]
    # Now the database has versions: the baseline is ignored for good.
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.name for r in report.applied] == ["003_index", "004_notes"]


def test_eight_runners_on_a_new_database_apply_the_baseline_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    command = [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"DATABASE_URL": database_url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    runners = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    outputs = [runner.communicate(timeout=120) for runner in runners]
    assert [runner.returncode for runner in runners] == [0] * 8, outputs
    applied = [
        event["name"]
        for _, stderr in outputs
        for event in log_events(stderr)
        if event["event"] == "migration_applied"
    ]
    assert sorted(applied) == ["003_schema.baseline", "004_notes"]
    assert _ran(database_url) == ["004"]
    assert [v for v, _, _ in _rows(database_url)] == [1, 2, 3, 4]
    assert asyncio.run(migration_locks_held(database_url)) == 0


def test_dry_run_says_it_would_apply_the_baseline(tmp_path: Path, database_url: str) -> None:
    folder = _folder(tmp_path)
    result = _cli(folder, database_url, "--dry-run", "--json")
    assert result.returncode == ExitCode.OK, result.stderr
    pending = json.loads(result.stdout)
    assert [item["name"] for item in pending] == ["003_schema.baseline", "004_notes"]
    assert [item["file"] for item in pending] == ["003_schema.baseline.sql", "004_notes.sql"]
    assert "items" not in asyncio.run(table_names(database_url))


def test_timestamp_versions_take_a_baseline_too(tmp_path: Path, database_url: str) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "20240101000000_a.sql": "CREATE TABLE ran (file text);\n"
            "INSERT INTO ran VALUES ('a');\n",
            "20240102000000_b.sql": "INSERT INTO ran VALUES ('b');\nCREATE TABLE b (id int);\n",
            "20240102000000_schema.baseline.sql": "CREATE TABLE ran (file text);\n"
            "CREATE TABLE b (id int);\n",
            "20240103000000_c.sql": "INSERT INTO ran VALUES ('c');\n",
        },
    )
    result = _cli(folder, database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert _ran(database_url) == ["c"]
    rows = _rows(database_url)
    assert [v for v, _, _ in rows] == [20240101000000, 20240102000000, 20240103000000]
    assert {by for v, _, by in rows[:2]} == {"baseline-file:20240102000000"}
    assert _cli(folder, database_url, "--check").returncode == ExitCode.OK


STAMPED = {
    "20240101000000_a.sql": "CREATE TABLE ran (file text);\n",
    "20240102000000_b.sql": "CREATE TABLE b (id int);\n",
}


@pytest.mark.parametrize("command", [("--status",), ("--dry-run",), ()], ids=str)
@pytest.mark.parametrize(
    ("files", "baseline", "says"),
    [
        (HISTORY, "20240101120000_schema.baseline.sql", "is a timestamp and the folder's"),
        (STAMPED, "003_schema.baseline.sql", "is numbered and the folder's"),
    ],
    ids=["timestamp-in-numbered", "numbered-in-timestamped"],
)
def test_a_baseline_in_the_other_version_style_is_refused(
    tmp_path: Path,
    database_url: str,
    files: dict[str, str],
    baseline: str,
    says: str,
    command: tuple[str, ...],
) -> None:
    """A timestamp baseline in a numbered folder covered every file, and a numbered one in
    a timestamped folder none (its new database applied it and then every file)."""
    folder = write_migrations(tmp_path / "m", files | {baseline: BASELINE})
    result = _cli(folder, database_url, *command)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"{baseline} {says}" in result.stderr, result.stderr
    assert "rename it after the version of the newest file it covers" in result.stderr
    assert "ran" not in asyncio.run(table_names(database_url))
    (folder / "natlangchain-migrate.toml").write_text("mixed-versions = true\n")
    assert _cli(folder, database_url, "--dry-run").returncode == ExitCode.OK


def test_a_bad_baseline_fails_whole_naming_its_file_and_line(
    tmp_path: Path, database_url: str
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        HISTORY | {"003_schema.baseline.sql": BASELINE.replace("CREATE INDEX", "CREATE INDX")},
    )
    result = _cli(folder, database_url)
    assert result.returncode != ExitCode.OK
    assert "003_schema.baseline.sql:4" in result.stderr, result.stderr
    # Nothing half-applied: not even the ledger, created in the baseline's transaction.
    assert asyncio.run(table_names(database_url)).isdisjoint({"ran", "schema_migrations"})
    # The next run, with the file fixed, applies it whole.
    (folder / "003_schema.baseline.sql").write_text(BASELINE)
    assert _cli(folder, database_url).returncode == ExitCode.OK
    assert _ran(database_url) == []
    assert {by for _, _, by in _rows(database_url)} == {"baseline-file:003"}


def test_status_drift_and_rollback_after_the_files_below_the_baseline_are_squashed(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path, squash=True)
    assert _cli(folder, database_url).returncode == ExitCode.OK
    assert _ran(database_url) == ["004"]
    # No file of 001-003: the baseline wrote the row of its own version, with its checksum.
    assert [(v, name) for v, name, _ in _rows(database_url)] == [
        (3, "003_schema.baseline"),
        (4, "004_notes"),
    ]
    status = _cli(folder, database_url, "--status", "--json")
    assert status.returncode == ExitCode.OK, status.stderr
    states = {item["version"]: item["state"] for item in json.loads(status.stdout)}
    assert states == {3: "APPLIED", 4: "APPLIED"}
    assert _cli(folder, database_url, "--check").returncode == ExitCode.OK
    # 004 rolls back with its down file; 003 has none (squashed): refused, nothing changed.
    assert _cli(folder, database_url, "--rollback").returncode == ExitCode.OK
    refused = _cli(folder, database_url, "--rollback")
    assert refused.returncode == ExitCode.USAGE, refused.stderr
    assert "built from the baseline file 003_schema.baseline.sql" in refused.stderr
    assert [v for v, _, _ in _rows(database_url)] == [3]


def test_a_replayed_database_whose_old_files_are_squashed_keeps_its_history(
    tmp_path: Path, database_url: str
) -> None:
    folder = write_migrations(tmp_path / "m", HISTORY)
    assert _cli(folder, database_url).returncode == ExitCode.OK
    for name in HISTORY:
        (folder / name).unlink()
    write_migrations(folder, {"003_schema.baseline.sql": BASELINE} | ABOVE)
    check = _cli(folder, database_url, "--check")
    assert check.returncode == ExitCode.CHECK_PENDING, check.stdout + check.stderr  # 004, no drift
    assert _cli(folder, database_url).returncode == ExitCode.OK
    assert _ran(database_url) == ["001", "002", "003", "004"]  # the baseline never ran here
    refused = _cli(folder, database_url, "--rollback", "--to", "1")
    assert refused.returncode == ExitCode.USAGE
    assert "cannot roll back 003 (003_index)" in refused.stderr
    assert [v for v, _, _ in _rows(database_url)] == [1, 2, 3, 4]


def test_rollback_below_the_baseline_runs_the_down_files_that_are_there(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    assert _cli(folder, database_url).returncode == ExitCode.OK
    result = _cli(folder, database_url, "--rollback", "--to", "0")
    assert result.returncode == ExitCode.OK, result.stderr
    assert _rows(database_url) == []
    assert not {"ran", "items", "tags", "notes"} & asyncio.run(table_names(database_url))


@pytest.mark.parametrize("squash", [False, True], ids=["files-kept", "files-squashed"])
@pytest.mark.anyio
async def test_the_manifest_vouches_for_the_baseline_and_its_fast_path_holds(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, squash: bool
) -> None:
    folder = _folder(tmp_path, squash=squash)
    write_manifest(folder)
    assert "003_schema.baseline.sql" in (folder / MANIFEST_NAME).read_text()
    await migrate(database_url, migrations_dir=folder)
    reads: list[str] = []
    real, real_head = discovery.read_text, layouts._read_head

    def spy(entry: Traversable) -> str:
        reads.append(entry.name)
        return real(entry)

    def spy_head(entry: Traversable) -> bytes | None:
        reads.append(entry.name)
        return real_head(entry)

    monkeypatch.setattr(discovery, "read_text", spy)
    monkeypatch.setattr(layouts, "_read_head", spy_head)  # layout detection's read
    again = await migrate(database_url, migrations_dir=folder)
    assert again.up_to_date
    assert reads == []  # the start-up read no file: the ledger matched the manifest
    # An edited baseline file makes the manifest stale: sum --check names it.
    (folder / "003_schema.baseline.sql").write_text(BASELINE + "-- edited\n")
    assert stale_files(folder) == ["003_schema.baseline.sql"]


@pytest.mark.anyio
async def test_a_new_database_from_the_baseline_opens_each_file_once(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layout detection reads a small file whole: the checksums come from that read."""
    folder = _folder(tmp_path)
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.parent == folder:
            opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    report = await migrate(database_url, migrations_dir=folder)
    assert [r.name for r in report.applied] == ["003_schema.baseline", "004_notes"]
    ups = [name for name in opened if not name.endswith(".down.sql")]
    assert sorted(set(ups)) == sorted(ups), ups  # none twice


async def _ran_async(url: str) -> list[str]:
    return list(await fetchval(url, "SELECT array_agg(file ORDER BY file) FROM ran") or [])


async def _rows_async(url: str) -> list[tuple[int, str, str]]:
    return [(int(r["version"]), r["name"], r["applied_by"]) for r in await ledger_rows(url)]


def _copy_of_shipped(into: Path) -> Path:
    into.mkdir()
    for path in shipped_migrations_dir().iterdir():
        if path.name.endswith(".sql"):
            (into / path.name).write_bytes(path.read_bytes())
    return into


def test_the_written_baseline_of_the_shipped_migrations_applies_and_verify_passes(
    tmp_path: Path, database_url: str, admin_url: str
) -> None:
    folder = _copy_of_shipped(tmp_path / "m")
    written = run_cli("baseline-file", "--migrations-dir", str(folder), database_url=admin_url)
    assert written.returncode == ExitCode.OK, written.stderr
    baseline = folder / "003_schema.baseline.sql"
    assert f"Wrote {baseline}" in written.stdout
    text = baseline.read_text()
    # The server's default pgvector, as 002's own CREATE EXTENSION would get it.
    assert "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;\n" in text
    assert "schema_migrations" not in text  # the ledger is the runner's, not the baseline's
    assert "\n-- schema: public (" in text
    verified = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert verified.returncode == ExitCode.OK, verified.stdout + verified.stderr
    assert "✓ 003_schema.baseline.sql: gives the schema" in verified.stdout
    applied = _cli(folder, database_url)
    assert applied.returncode == ExitCode.OK, applied.stderr
    names = [e["name"] for e in log_events(applied.stderr) if e["event"] == "migration_applied"]
    assert names == ["003_schema.baseline"]
    assert _cli(folder, database_url, "--check").returncode == ExitCode.OK


def test_verify_fails_on_a_baseline_that_differs_from_the_replay(
    tmp_path: Path, admin_url: str
) -> None:
    folder = _folder(tmp_path)
    (folder / "003_schema.baseline.sql").write_text(BASELINE.replace("CREATE INDEX", "-- "))
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stdout + result.stderr
    failure = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(failure) == 1
    assert "003_schema.baseline.sql gives another schema than replaying" in failure[0]
    assert "only the replay has CREATE INDEX tags_item" in failure[0]


def test_verify_compares_a_baseline_between_two_files_with_their_replay(
    tmp_path: Path, admin_url: str
) -> None:
    """A baseline whose version has no file but whose covered files are here (004 over
    001-003, below 005) was taken for a squashed history: verify skipped the comparison
    and the down checks of 001-003, and passed a wrong baseline."""
    above = {"005_notes.sql": ABOVE["004_notes.sql"], "005_notes.down.sql": "DROP TABLE notes;\n"}
    folder = write_migrations(tmp_path / "m", {**HISTORY, **above})
    (folder / "004_schema.baseline.sql").write_text(BASELINE)
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "✓ 004_schema.baseline.sql: gives the schema" in result.stdout
    assert "✓ 001_items: down restores" in result.stdout
    (folder / "004_schema.baseline.sql").write_text(BASELINE.replace("CREATE INDEX", "-- "))
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stdout + result.stderr
    assert "only the replay has CREATE INDEX tags_item" in result.stdout


def test_verify_of_a_squashed_history_starts_from_the_baseline(
    tmp_path: Path, admin_url: str
) -> None:
    folder = _folder(tmp_path, squash=True)
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line[:1] == "✓"] == [
        "✓ 004_notes"
    ]


# Objects whose order by name alone would not apply: a sequence owned by a later table, a
# view reading a later-named view, a function in a column default, a SQL-standard body
# reading a table, a function returning a table's rows, a partition named before its
# parent, a foreign key to a unique index, a trigger.
TANGLED = """
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('ok', 'sad');
CREATE FUNCTION app.default_name() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE TABLE app.z_people (id serial PRIMARY KEY, name text DEFAULT app.default_name(),
    mood app.mood, code int);
CREATE UNIQUE INDEX people_code ON app.z_people (code);
CREATE TABLE app.a_pets (id int, owner_code int REFERENCES app.z_people (code));
CREATE SEQUENCE app.a_counter OWNED BY app.z_people.id;
CREATE FUNCTION app.count_people() RETURNS bigint LANGUAGE sql
    BEGIN ATOMIC SELECT count(*) FROM app.z_people; END;
CREATE FUNCTION app.sad_people() RETURNS SETOF app.z_people LANGUAGE sql
    AS $$ SELECT * FROM app.z_people WHERE mood = 'sad' $$;
CREATE VIEW app.z_base AS SELECT id, name FROM app.z_people;
CREATE VIEW app.a_top AS SELECT name, app.count_people() AS n FROM app.z_base;
CREATE TABLE app.b_events (at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE app.a_events_2024 PARTITION OF app.b_events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
CREATE TRIGGER touch BEFORE INSERT ON app.z_people FOR EACH ROW EXECUTE FUNCTION app.touch();
"""


def test_dump_schema_output_applies_as_a_baseline_file(
    tmp_path: Path, database_url: str, admin_url: str
) -> None:
    folder = write_migrations(tmp_path / "m", {"001_tangled.sql": TANGLED})
    assert _cli(folder, database_url).returncode == ExitCode.OK
    dumped = run_cli("dump-schema", "-", database_url=database_url)
    assert dumped.returncode == ExitCode.OK, dumped.stderr
    (folder / "001_dumped.baseline.sql").write_text(dumped.stdout)
    (folder / "001_tangled.down.sql").write_text("DROP SCHEMA app CASCADE;\n")
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "✓ 001_dumped.baseline.sql" in result.stdout


@pytest.mark.parametrize(
    "layout",
    [
        {
            "001_items.up.sql": "CREATE TABLE ran (file text);\nINSERT INTO ran VALUES ('1');\n",
            "001_items.down.sql": "DROP TABLE ran;\n",
            "002_more.up.sql": "INSERT INTO ran VALUES ('2');\n",
            "002_more.down.sql": "DELETE FROM ran;\n",
        },
        {
            "001_items.sql": "-- +goose Up\nCREATE TABLE ran (file text);\n"
            "INSERT INTO ran VALUES ('1');\n-- +goose Down\nDROP TABLE ran;\n",
            "002_more.sql": "-- +goose Up\nINSERT INTO ran VALUES ('2');\n"
            "-- +goose Down\nDELETE FROM ran;\n",
        },
        {
            "001_items.sql": "-- migrate:up\nCREATE TABLE ran (file text);\n"
            "INSERT INTO ran VALUES ('1');\n-- migrate:down\nDROP TABLE ran;\n",
            "002_more.sql": "-- migrate:up\nINSERT INTO ran VALUES ('2');\n"
            "-- migrate:down\nDELETE FROM ran;\n",
        },
        {
            "V1__items.sql": "CREATE TABLE ran (file text);\nINSERT INTO ran VALUES ('1');\n",
            "V2__more.sql": "INSERT INTO ran VALUES ('2');\n",
        },
    ],
    ids=["golang-migrate", "goose", "dbmate", "flyway"],
)
@pytest.mark.anyio
async def test_another_tools_layout_takes_a_baseline_file_too(
    tmp_path: Path, database_url: str, layout: dict[str, str]
) -> None:
    baseline = {"001_schema.baseline.sql": "CREATE TABLE ran (file text);\n"}
    folder = write_migrations(tmp_path / "m", layout | baseline)
    report = await migrate(database_url, migrations_dir=folder)
    assert report.applied[0].name == "001_schema.baseline"
    assert await _ran_async(database_url) == ["2"]
    assert [v for v, _, _ in await _rows_async(database_url)] == [1, 2]


def test_baseline_file_keeps_the_manifest_current_and_leaves_repeatables_out(
    tmp_path: Path, admin_url: str
) -> None:
    folder = write_migrations(
        tmp_path / "m", HISTORY | {"R__names.sql": "CREATE OR REPLACE VIEW names AS SELECT 1;\n"}
    )
    write_manifest(folder)
    result = run_cli(
        "baseline-file",
        "--migrations-dir",
        str(folder),
        "--up-to",
        "2",
        "--name",
        "first_two",
        database_url=admin_url,
    )
    assert result.returncode == ExitCode.OK, result.stderr
    text = (folder / "002_first_two.baseline.sql").read_text()
    assert "public.tags" in text
    assert "CREATE INDEX tags_item" not in text  # 003 is above it
    assert "names" not in text  # repeatables run after a baseline, as after a replay
    assert stale_files(folder) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give --migrations-dir DIR"),
        (("--up-to", "7"), "--up-to 7: no migration file has that version"),
        (("--name", "bad-name"), "--name 'bad-name': use letters, digits and underscores"),
    ],
    ids=["no-folder", "unknown-version", "bad-name"],
)
def test_baseline_file_refuses_bad_input_with_exit_2(
    tmp_path: Path, admin_url: str, args: tuple[str, ...], says: str
) -> None:
    folder = write_migrations(tmp_path / "m", HISTORY)
    where = () if not args else ("--migrations-dir", str(folder))
    result = run_cli("baseline-file", *where, *args, database_url=admin_url)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert says in result.stderr
    assert not list(folder.glob("*.baseline.sql"))


def test_new_continues_after_a_squashed_history(tmp_path: Path) -> None:
    folder = _folder(tmp_path, squash=True, above=False)
    result = run_cli("new", "add_notes", "--migrations-dir", str(folder), database_url=None)
    assert result.returncode == ExitCode.OK, result.stderr
    assert (folder / "004_add_notes.sql").exists()


def test_an_unqualified_baseline_builds_in_the_target_schema(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    result = _cli(folder, database_url, "--schema", "tenant_a")
    assert result.returncode == ExitCode.OK, result.stderr
    assert {"ran", "items", "tags", "notes"} <= asyncio.run(table_names(database_url, "tenant_a"))
    assert "items" not in asyncio.run(table_names(database_url))


def test_transaction_lock_mode_applies_the_baseline_in_its_one_transaction(
    tmp_path: Path, database_url: str
) -> None:
    folder = _folder(tmp_path)
    result = _cli(folder, database_url, "--lock-mode", "transaction")
    assert result.returncode == ExitCode.OK, result.stderr
    assert _ran(database_url) == ["004"]
    assert [v for v, _, _ in _rows(database_url)] == [1, 2, 3, 4]


@pytest.mark.parametrize("copy_data", [False, True], ids=["plain", "streamed"])
def test_a_baseline_files_settings_do_not_reach_the_files_after_it(
    tmp_path: Path, database_url: str, copy_data: bool
) -> None:
    """Under --lock-mode transaction (one transaction for the run) the written header's
    SET LOCAL check_function_bodies = false stayed on: a later file's bad function body
    was no longer checked and its migration applied."""
    baseline = schema_dump.HEADER + BASELINE + (COPY_ITEMS if copy_data else "")
    bad = "CREATE FUNCTION broken() RETURNS int LANGUAGE sql AS 'SELECT n FROM no_such';\n"
    folder = write_migrations(
        tmp_path / "m", HISTORY | {"003_schema.baseline.sql": baseline, "004_f.sql": bad}
    )
    for lock_mode in ("transaction", "session"):
        result = _cli(folder, database_url, "--lock-mode", lock_mode)
        assert result.returncode == ExitCode.MIGRATION_FAILED, result.stderr
        assert "004_f.sql:1" in result.stderr, result.stderr
        assert "no_such" in result.stderr
    setting = "SELECT current_setting('check_function_bodies')"
    assert asyncio.run(fetchval(database_url, setting)) == "on"


def test_a_written_baseline_of_a_generated_history_of_every_kind_passes_verify(
    tmp_path: Path, admin_url: str
) -> None:
    folder = tmp_path / "m"
    write_history(folder, 24)
    written = run_cli("baseline-file", "--migrations-dir", str(folder), database_url=admin_url)
    assert written.returncode == ExitCode.OK, written.stderr
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "✓ 024_schema.baseline.sql: gives the schema" in result.stdout


def test_a_written_baseline_is_refused_in_another_schema(tmp_path: Path, database_url: str) -> None:
    folder = _folder(tmp_path)
    baseline = folder / "003_schema.baseline.sql"
    baseline.write_text(schema_line("public") + BASELINE.replace("TABLE ", "TABLE public."))
    for dry_run in (("--dry-run",), ()):  # a dry run says so too (it listed the file)
        result = _cli(folder, database_url, "--schema", "tenant_a", *dry_run)
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert "003_schema.baseline.sql was written for schema public" in result.stderr
    assert "items" not in asyncio.run(table_names(database_url))
    assert _cli(folder, database_url).returncode == ExitCode.OK  # into public it applies


def _written(tmp_path: Path, admin_url: str) -> Path:
    """HISTORY with a baseline written by ``baseline-file`` (for public), and 004 above."""
    folder = write_migrations(tmp_path / "written", HISTORY)
    written = run_cli("baseline-file", "--migrations-dir", str(folder), database_url=admin_url)
    assert written.returncode == ExitCode.OK, written.stderr
    write_migrations(folder, ABOVE)
    return folder


def test_tenant_schemas_replay_when_the_written_baseline_is_for_another_schema(
    tmp_path: Path, database_url: str, admin_url: str
) -> None:
    # A fleet of tenant schemas from one folder: the baseline written for public is not
    # theirs, and the files it was written from are here, so each new tenant replays them.
    folder = _written(tmp_path, admin_url)
    asyncio.run(sql_execute(database_url, "CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b"))
    fleet = run_cli(
        "fleet",
        "--migrations-dir",
        str(folder),
        "--each-schema",
        "tenant\\_%",
        database_url=database_url,
    )
    assert fleet.returncode == ExitCode.OK, fleet.stdout + fleet.stderr
    for tenant in ("tenant_a", "tenant_b"):
        ran = asyncio.run(
            fetchval(database_url, f"SELECT array_agg(file ORDER BY file) FROM {tenant}.ran")
        )
        assert list(ran) == ["001", "002", "003", "004"]  # replayed, in the tenant's schema
        assert _cli(folder, database_url, "--schema", tenant, "--check").returncode == 0
    public = _cli(folder, database_url)  # public, a new database: the baseline
    assert public.returncode == ExitCode.OK, public.stderr
    assert _ran(database_url) == ["004"]


def test_a_squashed_written_baseline_is_still_refused_in_another_schema(
    tmp_path: Path, database_url: str, admin_url: str
) -> None:
    folder = _written(tmp_path, admin_url)
    for name in HISTORY:  # squashed: nothing to replay in another schema
        (folder / name).unlink()
    result = _cli(folder, database_url, "--schema", "tenant_c")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "003_schema.baseline.sql was written for schema public" in result.stderr
    assert asyncio.run(fetchval(database_url, "SELECT to_regclass('tenant_c.items')")) is None


@pytest.mark.parametrize("move", ["baseline renumbered above a file", "a file added below it"])
def test_a_file_the_written_baseline_does_not_hold_is_refused(
    tmp_path: Path, database_url: str, admin_url: str, move: str
) -> None:
    folder = _written(tmp_path, admin_url)
    if move == "baseline renumbered above a file":
        (folder / "003_schema.baseline.sql").rename(folder / "009_schema.baseline.sql")
        stray = "004_notes.sql"
    else:
        (folder / "003_schema.baseline.sql").rename(folder / "005_schema.baseline.sql")
        write_migrations(folder, {"005_five.sql": "CREATE TABLE five (id int);\n"})
        stray = "004_notes.sql"
    for args in (("--dry-run",), ("--status",), ()):
        result = _cli(folder, database_url, *args)
        assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
        assert f"{stray} is numbered at or below the baseline file" in result.stderr
        assert "baseline-file" in result.stderr  # what to do
    assert "items" not in asyncio.run(table_names(database_url))


@pytest.mark.parametrize("squash", [False, True], ids=["files-here", "squashed"])
def test_status_and_check_say_a_new_database_applies_the_baseline(
    squash: bool, tmp_path: Path, database_url: str
) -> None:
    """They listed 001-003 as PENDING and never named the baseline file a run applies
    instead (only --dry-run did); a squashed folder's --check even said up to date."""
    folder = _folder(tmp_path, squash=squash)
    instead = "a new database applies it " + (
        "for the versions up to 003" if squash else "instead of 001-003"
    )
    # The versions whose ledger rows it writes: the squashed files' are gone.
    covering = {"file": "003_schema.baseline.sql", "versions": [3] if squash else [1, 2, 3]}
    status = _cli(folder, database_url, "--status")
    assert status.returncode == ExitCode.OK, status.stderr
    lines = [line.strip() for line in status.stdout.splitlines() if line.startswith("  ")]
    expected = [f"○ 003_schema.baseline: PENDING ({instead})", "○ 004_notes: PENDING"]
    if not squash:
        note = "(a new database applies 003_schema.baseline.sql instead)"
        expected[:0] = [f"○ {n}: PENDING {note}" for n in ("001_items", "002_tags", "003_index")]
    assert lines == expected, status.stdout
    objects = json.loads(_cli(folder, database_url, "--status", "--json").stdout)
    seen = [(o["version"], o["name"], o["state"], o["baseline"]) for o in objects]
    if squash:  # the baseline's own object, as the row it writes
        assert seen == [
            (3, "003_schema.baseline", "PENDING", covering),
            (4, "004_notes", "PENDING", None),
        ]
    else:
        assert seen == [
            (1, "001_items", "PENDING", covering),
            (2, "002_tags", "PENDING", covering),
            (3, "003_index", "PENDING", covering),
            (4, "004_notes", "PENDING", None),
        ]
    assert all("applied_checksum" in o and "applied_by" in o for o in objects)  # kept
    check = _cli(folder, database_url, "--check")
    assert check.returncode == ExitCode.CHECK_PENDING, check.stdout + check.stderr
    total = 1 if squash else 4
    assert check.stdout.strip() == (
        f"{total} pending: 0 of {total} applied; 003_schema.baseline.sql: {instead}"
    )
    summary = json.loads(_cli(folder, database_url, "--check", "--json").stdout)
    assert summary["baseline"] == covering
    assert summary["pending"] == ([4] if squash else [1, 2, 3, 4])
    # Applied: nothing of the baseline is left to say.
    assert _cli(folder, database_url).returncode == ExitCode.OK
    after = _cli(folder, database_url, "--status")
    assert "a new database applies" not in after.stdout, after.stdout
    assert json.loads(_cli(folder, database_url, "--check", "--json").stdout)["baseline"] is None


def test_check_is_pending_on_a_new_database_with_only_a_baseline_file(
    tmp_path: Path, database_url: str
) -> None:
    """No file but the baseline (a squashed history with nothing above): it said 'up to
    date' and exited 0, a readiness probe passing on an empty database."""
    folder = _folder(tmp_path, squash=True, above=False)
    check = _cli(folder, database_url, "--check")
    assert check.returncode == ExitCode.CHECK_PENDING, check.stdout + check.stderr
    assert check.stdout.strip() == (
        "1 pending: 0 of 0 applied; 003_schema.baseline.sql: a new database applies it "
        "for the versions up to 003"
    )
    assert _cli(folder, database_url).returncode == ExitCode.OK
    assert _cli(folder, database_url, "--check").returncode == ExitCode.OK


def test_a_baseline_of_a_prisma_history_is_written_verified_and_applied(
    tmp_path: Path, admin_url: str, database_url: str
) -> None:
    """prisma keeps each migration in a folder (``<version>_<name>/migration.sql``, with
    the ``down.sql`` its docs describe): the scratch replays of baseline-file and verify
    copy those folders too."""
    folder = tmp_path / "prisma"
    for version, (name, sql, down) in enumerate(
        [
            ("init", "CREATE TABLE items (id int PRIMARY KEY);\n", "DROP TABLE items;\n"),
            (
                "tags",
                "CREATE TABLE tags (id int PRIMARY KEY, item int REFERENCES items);\n",
                "DROP TABLE tags;\n",
            ),
            (
                "index",
                "CREATE INDEX CONCURRENTLY tags_item ON tags (item);\n",
                "DROP INDEX tags_item;\n",
            ),
        ],
        start=20240101000000,
    ):
        (folder / f"{version}_{name}").mkdir(parents=True)
        (folder / f"{version}_{name}" / "migration.sql").write_text(sql)
        (folder / f"{version}_{name}" / "down.sql").write_text(down)
    written = run_cli("baseline-file", "--migrations-dir", str(folder), database_url=admin_url)
    assert written.returncode == ExitCode.OK, written.stderr
    baseline = folder / "20240101000002_schema.baseline.sql"
    assert "CREATE INDEX tags_item" in baseline.read_text()
    verified = run_cli("verify", "--migrations-dir", str(folder), database_url=admin_url)
    assert "✓ 20240101000002_schema.baseline.sql: gives the schema" in verified.stdout, (
        verified.stdout + verified.stderr
    )
    assert _cli(folder, database_url).returncode == ExitCode.OK
    rows = _rows(database_url)
    assert [(v, by) for v, _, by in rows] == [
        (20240101000000 + n, "baseline-file:20240101000002") for n in range(3)
    ]
    assert "tags" in asyncio.run(table_names(database_url))


@pytest.mark.parametrize("width", [5, 20240101000000, 10**19], ids=["int", "bigint", "numeric"])
def test_the_baseline_rows_travel_as_arrays_and_keep_every_name_and_checksum(
    database_url: str, width: int
) -> None:
    """A baseline writes its covered rows as three array constants unnested: names with
    quotes, backslashes, braces, commas and non-ASCII letters come back as they were, in
    a ledger of each version column type."""
    from natlangchain_migrate.discovery import Migration
    from natlangchain_migrate.ledger import Ledger

    names = ['001_a"b', "002_c\\d", "003_{e,f}", "004_g'h", "005_ünï", "006_NULL"]
    covered = [
        Migration(width + n, name, f"{name}.sql", "", f"sum-{n}\\\"'")
        for n, name in enumerate(names)
    ]

    async def record() -> list[tuple[int, str, str, str]]:
        import asyncpg

        ledger = Ledger()
        conn = await asyncpg.connect(database_url)
        try:
            await ledger.ensure(conn, widest=width + len(names))
            sql = ledger.record_many_sql(covered, applied_by="baseline-file:9", since="now()")
            await conn.execute(sql)
            rows = await conn.fetch(
                "SELECT version, name, checksum, applied_by FROM schema_migrations ORDER BY 1"
            )
        finally:
            await conn.close()
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    assert asyncio.run(record()) == [
        (m.version, m.name, m.checksum, "baseline-file:9") for m in covered
    ]
