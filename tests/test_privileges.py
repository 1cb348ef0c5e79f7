"""Least privilege and other schemas: a role with only USAGE, CREATE on its schema migrates
001-003 once a DBA has created pgvector (in public, as DBAs do); two tenant schemas share a
database; missing privileges are named with the GRANT that fixes them, never "fix the file"."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import MigrateError, migrate
from natlangchain_migrate.errors import ExitCode
from tests.conftest import table_names

pytestmark = pytest.mark.anyio

ROLE_PASSWORD = "r0le-pw-never-printed"


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}:{ROLE_PASSWORD}@{host}"))


@pytest.fixture
async def role(database_url: str) -> AsyncIterator[str]:
    """A login role with no database-level CREATE (PostgreSQL 15+ default for PUBLIC)."""
    name = f"r_{uuid.uuid4().hex[:8]}"
    database = urlsplit(database_url).path.lstrip("/")
    await sql_execute(
        database_url,
        f"CREATE ROLE {name} LOGIN PASSWORD '{ROLE_PASSWORD}'; "
        f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC; '
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    )
    yield name
    await sql_execute(database_url, f"DROP OWNED BY {name} CASCADE; DROP ROLE {name}")


async def test_a_schema_owner_without_database_create_migrates_with_pgvector_in_public(
    database_url: str, role: str
) -> None:
    await sql_execute(
        database_url,
        "CREATE EXTENSION vector SCHEMA public; "
        f"CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO {role}; "
        f"CREATE SCHEMA tenant2; GRANT USAGE, CREATE ON SCHEMA tenant2 TO {role}",
    )
    as_role = _as_role(database_url, role)
    for schema in ("app", "tenant2"):
        report = await migrate(as_role, schema=schema)
        assert [r.version for r in report.applied] == [1, 2, 3]
        tables = await table_names(database_url, schema)
        assert {"schema_migrations", "entries", "entry_embeddings"} <= tables
    assert not await table_names(database_url, "public")
    assert (await migrate(as_role, schema="app")).up_to_date


async def test_a_role_that_may_not_create_pgvector_gets_the_dba_step(
    database_url: str, role: str
) -> None:
    await sql_execute(
        database_url, f"CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO {role}"
    )
    with pytest.raises(MigrateError) as raised:
        await migrate(_as_role(database_url, role), schema="app")
    error = raised.value
    assert error.exit_code == ExitCode.PREREQUISITE
    assert "ask a superuser (the DBA) to run CREATE EXTENSION vector;" in str(error)
    assert "Fix the file" not in str(error)
    assert "--skip 2" in str(error)
    # Refused before anything ran: 001 is not left applied without 002.
    assert "Nothing was applied" in str(error)
    assert await table_names(database_url, "app") == set()


async def test_a_missing_schema_privilege_names_the_grant(database_url: str, role: str) -> None:
    await sql_execute(
        database_url,
        f"CREATE EXTENSION vector; CREATE SCHEMA app; GRANT USAGE ON SCHEMA app TO {role}",
    )
    with pytest.raises(MigrateError) as raised:
        await migrate(_as_role(database_url, role), schema="app")
    assert raised.value.exit_code == ExitCode.PRIVILEGE
    assert f'GRANT USAGE, CREATE ON SCHEMA "app" TO {role};' in str(raised.value)
    assert ROLE_PASSWORD not in str(raised.value)


async def test_a_role_without_create_on_a_migration_object_is_told_which_grant(
    database_url: str, role: str, tmp_path: object
) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "m"
    folder.mkdir()
    (folder / "001_t.sql").write_text("CREATE TABLE public.not_mine (id int);\n")
    await sql_execute(
        database_url, f"CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO {role}"
    )
    with pytest.raises(MigrateError) as raised:
        await migrate(_as_role(database_url, role), schema="app", migrations_dir=folder)
    assert raised.value.exit_code == ExitCode.PRIVILEGE
    message = str(raised.value)
    assert message.startswith("001_t.sql")
    assert f"Role {role} lacks a privilege that 001_t.sql needs" in message
    assert "Fix the file" not in message
