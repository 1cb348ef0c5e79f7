"""The pytest plugin, as an app developer meets it: a tiny project of its own, run by
pytest in a subprocess (pytester), whose tests get migrated databases."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers.pgcluster import embedded_bindir, free_port, memory_backed_dir
from harness.servers.sql import fetch
from natlangchain_migrate.template_databases import template_name

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.system  # README: "Running the tests"

ITEMS_MIGRATION = "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);\n"

# Each test inserts a row and must see only its own: every test starts from an empty,
# migrated schema, whatever ran before it (in this process or another xdist worker).
APP_TESTS = """
import asyncio

import asyncpg
import pytest


async def _insert_and_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO items (label) VALUES ('mine')")
        return await conn.fetchval("SELECT count(*) FROM items")
    finally:
        await conn.close()


@pytest.mark.parametrize("n", range({count}))
def test_sees_an_empty_migrated_table(migrated_database_url: str, n: int) -> None:
    assert asyncio.run(_insert_and_count(migrated_database_url)) == 1


@pytest.mark.anyio
async def test_connection_fixture_sees_an_empty_migrated_table(
    migrated_connection: asyncpg.Connection,
) -> None:
    await migrated_connection.execute("INSERT INTO items (label) VALUES ('mine')")
    assert await migrated_connection.fetchval("SELECT count(*) FROM items") == 1
    versions = await migrated_connection.fetch("SELECT version FROM schema_migrations")
    assert [row["version"] for row in versions] == [1]
"""


@pytest.fixture(autouse=True)
def _no_hypothesis_in_the_app_sessions(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each app session below loads every installed pytest plugin, as an app's would, but
    hypothesis's: it is not under test and costs a second of CPU per session (and per
    xdist worker). Set after pytester's own set-up, which clears PYTEST_ADDOPTS."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


@pytest.fixture
def app_project(pytester: pytest.Pytester, admin_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app's project: its own migrations folder named in its ini file, the test
    server in the environment variable, warnings as errors."""
    monkeypatch.setenv("NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL", admin_url)
    monkeypatch.delenv("NATLANGCHAIN_MIGRATE_DIR", raising=False)
    pytester.makeini(
        """
        [pytest]
        natlangchain_migrate_migrations_dir = db/migrations
        filterwarnings = error
        """
    )
    migrations = pytester.path / "db" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "001_items.sql").write_text(ITEMS_MIGRATION)
    return pytester.path


def _leftover_databases(admin_url: str) -> list[str]:
    """The plugin's databases on the server, but for this suite's own template (its
    ``migrated_database_url`` comes from the same plugin, on the same server)."""
    rows = asyncio.run(
        fetch(admin_url, "SELECT datname FROM pg_database WHERE datname LIKE 'nlcm\\_%'")
    )
    ours = template_name(None, "public")
    return [row["datname"] for row in rows if row["datname"] != ours]


def test_each_test_gets_its_own_migrated_database_and_none_is_left(
    pytester: pytest.Pytester, app_project: Path, admin_url: str
) -> None:
    pytester.makepyfile(test_app=APP_TESTS.format(count=3))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert _leftover_databases(admin_url) == []


@pytest.mark.slow
def test_xdist_workers_share_one_template_and_none_is_left(
    pytester: pytest.Pytester, app_project: Path, admin_url: str
) -> None:
    pytester.makepyfile(test_app=APP_TESTS.format(count=8))
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)
    assert _leftover_databases(admin_url) == []


def test_the_shipped_schema_is_the_default(
    pytester: pytest.Pytester, admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL", admin_url)
    monkeypatch.delenv("NATLANGCHAIN_MIGRATE_DIR", raising=False)
    pytester.makepyfile(
        test_app="""
        import asyncio

        import asyncpg


        async def _versions(url: str) -> list[int]:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(
                    "INSERT INTO blocks (block_index, timestamp, previous_hash, hash) "
                    "VALUES (0, now(), '0', 'genesis')"
                )
                rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
                return [row["version"] for row in rows]
            finally:
                await conn.close()


        def test_one(migrated_database_url: str) -> None:
            assert asyncio.run(_versions(migrated_database_url)) == [1, 2, 3]


        def test_two(migrated_database_url: str) -> None:
            assert asyncio.run(_versions(migrated_database_url)) == [1, 2, 3]
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_suite_with_its_own_server_overrides_the_admin_url_fixture(
    pytester: pytest.Pytester, app_project: Path, admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The override wins over the variable (here a closed port), as this repository's own
    conftest.py uses it; a failure then names the fixture."""
    monkeypatch.setenv(
        "NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL", f"postgresql://u:pw@127.0.0.1:{free_port()}/x"
    )
    pytester.makeconftest(
        f"""
        import pytest


        @pytest.fixture(scope="session")
        def natlangchain_migrate_admin_url() -> str:
            return {admin_url!r}
        """
    )
    pytester.makepyfile(test_app=APP_TESTS.format(count=2))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    assert _leftover_databases(admin_url) == []
    closed = f"postgresql://u:pw@127.0.0.1:{free_port()}/x"
    pytester.makeconftest(
        f"""
        import pytest


        @pytest.fixture(scope="session")
        def natlangchain_migrate_admin_url() -> str:
            return {closed!r}
        """
    )
    failed = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    failed.assert_outcomes(errors=3)
    failed.stdout.fnmatch_lines(
        ["*no migrated template on the natlangchain_migrate_admin_url fixture: could not*"]
    )


def test_fixtures_not_requested_touch_no_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Installed means loaded in every project: tests that do not ask for a database must
    not need a server, start one, or load the driver."""
    pytester.makepyfile(
        test_app="""
        import sys


        def test_plain() -> None:
            assert "asyncpg" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*migrated_database_url*", "*migrated_connection*"])
    closed_port = f"postgresql://u:pw@127.0.0.1:{free_port()}/x"
    monkeypatch.setenv("NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL", closed_port)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.delenv("NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL")
    monkeypatch.setenv("NATLANGCHAIN_MIGRATE_EMBEDDED_DIR", str(tmp_path / "pgdata"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not (tmp_path / "pgdata").exists()  # no embedded server was started


def test_an_unreachable_server_is_one_line_naming_the_variable_without_its_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "Sup3r-secret-pw"
    monkeypatch.setenv(
        "NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL",
        f"postgresql://app:{password}@127.0.0.1:{free_port()}/postgres",
    )
    pytester.makepyfile(test_app="def test_db(migrated_database_url: str) -> None:\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    output = result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "*natlangchain_migrate pytest plugin: no migrated template on "
            "NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL: could not connect to *"
        ]
    )
    assert password not in output
    assert "Traceback" not in output
    assert "During handling" not in output


def test_a_failing_migration_names_its_file_and_line(
    pytester: pytest.Pytester, app_project: Path, admin_url: str
) -> None:
    (app_project / "db" / "migrations" / "002_broken.sql").write_text(
        "CREATE TABLE fine (id int);\nCREATE TABLE broken (id int,);\n"
    )
    pytester.makepyfile(test_app="def test_db(migrated_database_url: str) -> None:\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no migrated template on*002_broken.sql:2:*"])
    assert "During handling" not in result.stdout.str()
    assert _leftover_databases(admin_url) == []


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """The embedded server's data directory, whose parents its account can reach as root
    too; the server is stopped and its files removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="nlcm-plugin-embedded-", dir=memory_backed_dir()))
    root.chmod(0o755)
    data = root / "pgdata"
    yield data
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [str(embedded_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            user=data.stat().st_uid if os.geteuid() == 0 else None,
        )
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_without_a_url_the_embedded_server_holds_the_test_databases(
    pytester: pytest.Pytester,
    app_project: Path,
    embedded_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL")
    monkeypatch.setenv("NATLANGCHAIN_MIGRATE_EMBEDDED_DIR", str(embedded_dir))
    pytester.makepyfile(test_app=APP_TESTS.format(count=2))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    assert (embedded_dir / "postmaster.pid").exists()  # the server the tests used


def test_an_edited_repeatable_makes_a_new_template(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_items.sql").write_text("CREATE TABLE items (id int);\n")
    (folder / "R__ids.sql").write_text("CREATE OR REPLACE VIEW ids AS SELECT id FROM items;\n")
    before = template_name(folder, "public")
    (folder / "R__ids.sql").write_text(
        "CREATE OR REPLACE VIEW ids AS SELECT id, 1 AS n FROM items;\n"
    )
    assert template_name(folder, "public") != before
