"""Real peer tools apply a history, ``adopt --from TOOL`` takes it over, and our runner goes
on: node-pg-migrate (npm, installed by the test into a cache: tests/registry_tools.py) and
alembic (PyPI, the test extra). dbmate and yoyo are in tests/test_adopt.py. Then public
histories in timestamp form, as their packages ship them: LiteLLM's prisma folders (the test
extra) and edda's dbmate file with its down section (a wheel fetched into the same cache).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.public_history import renumber_as_told
from harness.servers.sql import execute
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.schema_dump import dump_schema
from tests.conftest import run_cli, table_names, write_migrations
from tests.registry_tools import npm_packages, pypi_wheel

# node-pg-migrate's SQL migrations as its `create -j sql` writes them (13-digit millisecond
# timestamps, templates/migration-template.sql's markers), with a function body and an index.
NODE_PG_FILES = {
    "1700000000000_create-users.sql": (
        "-- Up Migration\nCREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);\n\n"
        "-- Down Migration\nDROP TABLE users;\n"
    ),
    "1700000000100_users-email.sql": (
        "-- Up Migration\nCREATE FUNCTION lower_email() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.email := lower(NEW.email); RETURN NEW; END; $$;\n"
        "CREATE TRIGGER users_email BEFORE INSERT ON users FOR EACH ROW "
        "EXECUTE FUNCTION lower_email();\n\n"
        "-- Down Migration\nDROP TRIGGER users_email ON users;\nDROP FUNCTION lower_email();\n"
    ),
}
NODE_PG_NEXT = {
    "1700000000200_create-orders.sql": (
        "-- Up Migration\nCREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users);\n"
        "-- Down Migration\nDROP TABLE orders;\n"
    ),
}


@pytest.fixture(scope="session")
def node_pg_migrate() -> list[str]:
    """The real node-pg-migrate CLI (npm), as a command line."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the node-pg-migrate test needs node and npm")
    modules = npm_packages("node-pg-migrate@9.0.0", "pg@8.16.3")
    return [node, str(modules / "node-pg-migrate" / "bin" / "node-pg-migrate.js")]


async def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def test_real_node_pg_migrate_history_is_adopted_and_ours_goes_on(
    node_pg_migrate: list[str], database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "migrations", NODE_PG_FILES)
    env = {**os.environ, "DATABASE_URL": database_url}
    applied = subprocess.run(
        [*node_pg_migrate, "up", "--migrations-dir", str(folder), "--verbose", "false"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    theirs = asyncio.run(_rows(database_url, "SELECT id, name FROM pgmigrations ORDER BY id"))
    assert [name for _, name in theirs] == [f.removesuffix(".sql") for f in NODE_PG_FILES]
    flags = ("--migrations-dir", str(folder))
    met = run_cli(*flags, database_url=database_url)
    assert met.returncode == ExitCode.USAGE, met.stderr
    assert "node-pg-migrate's ledger public.pgmigrations" in met.stderr
    done = run_cli("adopt", "--from", "node-pg-migrate", *flags, database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert (
        'recorded 2 migration(s) in "public"."schema_migrations" (newest 1700000000100)'
        in done.stdout
    )
    write_migrations(folder, NODE_PG_NEXT)
    for step in ((), ("--rollback",), ()):
        result = run_cli(*step, *flags, database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert {"users", "orders"} <= asyncio.run(table_names(database_url))
    status = run_cli("--status", *flags, database_url=database_url)
    assert "1700000000200" in status.stdout, status.stdout
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    assert asyncio.run(_rows(database_url, "SELECT id, name FROM pgmigrations ORDER BY id")) == (
        theirs
    )


# Three alembic revisions as a team writes them: op.create_table, op.execute, op.add_column
# (revision: its down revision, message, upgrade and downgrade bodies).
Revision = tuple[str | None, str, str, str]
ALEMBIC_REVISIONS: dict[str, Revision] = {
    "a1b2c3d4e5f6": (
        None,
        "create accounts",
        "op.create_table('accounts', sa.Column('id', sa.Integer, primary_key=True), "
        "sa.Column('email', sa.String(200), nullable=False))",
        "op.drop_table('accounts')",
    ),
    "b2c3d4e5f6a7": (
        "a1b2c3d4e5f6",
        "accounts email index",
        "op.execute('CREATE UNIQUE INDEX accounts_email ON accounts (lower(email))')",
        "op.execute('DROP INDEX accounts_email')",
    ),
    "c3d4e5f6a7b8": (
        "b2c3d4e5f6a7",
        "add accounts created",
        "op.add_column('accounts', sa.Column('created', sa.DateTime, "
        "server_default=sa.text('now()')))",
        "op.drop_column('accounts', 'created')",
    ),
}


def _alembic_project(root: Path, url: str, revisions: dict[str, Revision]) -> Path:
    """An alembic project made by ``alembic init`` with ``revisions`` written into it."""
    from alembic import command
    from alembic.config import Config

    ini = root / "alembic.ini"
    config = Config(str(ini))
    command.init(config, str(root / "alembic"))
    text = ini.read_text().replace(
        "sqlalchemy.url = driver://user:pass@localhost/dbname",
        "sqlalchemy.url = " + url.replace("postgresql://", "postgresql+psycopg://", 1),
    )
    ini.write_text(text.replace("%", "%%") if "%" in url else text)
    for revision, (down, message, up_code, down_code) in revisions.items():
        (root / "alembic" / "versions" / f"{revision}_x.py").write_text(
            f'"""{message}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f"revision = {revision!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    {up_code}\n\n\ndef downgrade():\n    {down_code}\n"
        )
    return ini


def _alembic(ini: Path, *args: str) -> None:
    alembic = Path(sys.executable).with_name("alembic")
    done = subprocess.run(
        [str(alembic), "-c", str(ini), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_real_alembic_history_is_exported_adopted_and_ours_goes_on(
    database_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("alembic")
    pytest.importorskip("psycopg")
    ini = _alembic_project(tmp_path / "project", database_url, ALEMBIC_REVISIONS)
    _alembic(ini, "upgrade", "head")
    theirs = asyncio.run(_rows(database_url, "SELECT version_num FROM alembic_version"))
    assert theirs == [("c3d4e5f6a7b8",)]
    folder = tmp_path / "migrations"
    flags = ("--migrations-dir", str(folder))
    exported = run_cli(
        "adopt", "--from", "alembic", "--export-from", str(ini), *flags, database_url=None
    )
    assert exported.returncode == 0, exported.stderr
    assert "Exported 3 alembic revision(s)" in exported.stdout
    names = sorted(path.name for path in folder.iterdir())
    assert names[:2] == [
        "001_a1b2c3d4e5f6_create_accounts.down.sql",
        "001_a1b2c3d4e5f6_create_accounts.sql",
    ]
    assert len(names) == 6
    assert all("alembic_version" not in (folder / name).read_text() for name in names)
    assert all("COMMIT" not in (folder / name).read_text() for name in names)
    met = run_cli(*flags, database_url=database_url)
    assert met.returncode == ExitCode.USAGE, met.stderr
    assert "alembic's ledger public.alembic_version" in met.stderr
    assert "adopt --from alembic" in met.stderr
    done = run_cli("adopt", "--from", "alembic", *flags, database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert "recorded 3 migration(s)" in done.stdout
    write_migrations(
        folder,
        {
            "004_orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, account_id int "
            "REFERENCES accounts);",
            "004_orders.down.sql": "DROP TABLE orders;",
        },
    )
    assert run_cli(*flags, database_url=database_url).returncode == 0
    first = asyncio.run(dump_schema(database_url))
    for step in (("--rollback", "--to", "0"), ()):  # the exported downs undo alembic's steps
        result = run_cli(*step, *flags, database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert asyncio.run(dump_schema(database_url)) == first
    assert asyncio.run(_rows(database_url, "SELECT version_num FROM alembic_version")) == theirs


@pytest.mark.parametrize(
    ("heads", "says"),
    [
        ("('a1b2c3d4e5f6'), ('b2c3d4e5f6a7')", "alembic_version holds 2 heads"),
        ("('ffffffffffff')", "alembic's head revision ffffffffffff has no file here"),
    ],
    ids=["several-heads", "head-without-file"],
)
def test_alembic_heads_that_name_no_single_file_are_refused(
    database_url: str, tmp_path: Path, heads: str, says: str
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_a1b2c3d4e5f6_create.sql": "CREATE TABLE a (id int);",
            "002_b2c3d4e5f6a7_more.sql": "CREATE TABLE b (id int);",
        },
    )
    asyncio.run(
        execute(
            database_url,
            (
                "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); "
                f"INSERT INTO alembic_version VALUES {heads};"
            ),
        )
    )
    result = run_cli(
        "adopt", "--from", "alembic", "--migrations-dir", str(folder), database_url=database_url
    )
    assert result.returncode == ExitCode.USAGE
    assert says in result.stderr
    assert "nothing was written" in result.stderr


def test_an_alembic_message_over_lines_stays_in_its_comment(tmp_path: Path) -> None:
    """The message was written as it is after "-- ": its second line ran as SQL."""
    pytest.importorskip("alembic")
    message = "create accounts\nDROP TABLE ran; -- and\r\u2028more"
    revisions: dict[str, Revision] = {
        "a1b2c3d4e5f6": (None, message, "op.execute('SELECT 1')", "pass")
    }
    ini = _alembic_project(tmp_path / "project", "postgresql://", revisions)
    folder = tmp_path / "m"
    flags = ("--from", "alembic", "--export-from", str(ini), "--migrations-dir", str(folder))
    result = run_cli("adopt", *flags, database_url=None)
    assert result.returncode == ExitCode.OK, result.stderr
    (up,) = [p for p in folder.iterdir() if not p.name.endswith(".down.sql")]
    first, *rest = up.read_text().splitlines()
    assert first == "-- alembic revision a1b2c3d4e5f6 (create accounts DROP TABLE ran; -- and more)"
    assert "DROP TABLE" not in "\n".join(rest)


def test_a_branched_alembic_history_is_refused_before_export(tmp_path: Path) -> None:
    pytest.importorskip("alembic")
    branched = {**ALEMBIC_REVISIONS, "d4e5f6a7b8c9": ("a1b2c3d4e5f6", "side", "pass", "pass")}
    ini = _alembic_project(tmp_path / "project", "postgresql://", branched)
    folder = tmp_path / "m"
    result = run_cli(
        "adopt",
        "--from",
        "alembic",
        "--export-from",
        str(ini),
        "--migrations-dir",
        str(folder),
        database_url=None,
    )
    assert result.returncode == ExitCode.USAGE
    assert "the alembic history has 2 heads" in result.stderr
    assert not folder.exists() or not any(folder.iterdir())


def test_public_prisma_history_applies_and_reapplies_in_timestamp_form(
    database_url: str, tmp_path: Path
) -> None:
    """LiteLLM's prisma history as litellm-proxy-extras (PyPI, BerriAI/litellm) ships it:
    220 folders ``<14-digit timestamp>_<name>/migration.sql``, written by others since 2025,
    with one-statement CREATE INDEX CONCURRENTLY files. It has no down files (prisma writes
    none), so it cannot be rolled back: it is applied, reset and applied again instead."""
    extras = pytest.importorskip("litellm_proxy_extras")
    folder = tmp_path / "migrations"
    shutil.copytree(Path(extras.__file__).parent / "migrations", folder)
    flags = ("--migrations-dir", str(folder))
    refused = run_cli("--status", *flags, database_url=database_url)
    assert refused.returncode == ExitCode.USAGE
    assert "share the timestamp" in refused.stderr  # prisma keys by name; two share a second
    assert len(renumber_as_told(folder, dates=False)) >= 2
    mixed = run_cli("--status", *flags, database_url=database_url)
    assert mixed.returncode == ExitCode.USAGE
    assert "20260108_add_user_email_lower_idx/migration.sql is numbered" in mixed.stderr
    assert renumber_as_told(folder, dates=True) == ["20260108_add_user_email_lower_idx"]
    count = sum(1 for path in folder.iterdir() if path.is_dir())
    up = run_cli(*flags, database_url=database_url, timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    assert f'"applied_count": {count},' in up.stderr, up.stderr[-500:]
    status = run_cli("--status", *flags, database_url=database_url)
    assert "20250326162113_baseline: APPLIED" in status.stdout, status.stdout[-2000:]
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    first = asyncio.run(dump_schema(database_url))
    reset = "DROP SCHEMA public CASCADE; CREATE SCHEMA public; COMMENT ON SCHEMA public IS "
    asyncio.run(execute(database_url, reset + "'standard public schema';"))
    again = run_cli(*flags, database_url=database_url, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert asyncio.run(dump_schema(database_url)) == first


# edda (i2y/edda, MIT), a durable-execution framework that applies its schema with dbmate's
# file format at start-up and ships it in its wheel, one folder per database.
EDDA = "edda-framework==0.16.2"
EDDA_POSTGRESQL = "edda/migrations/postgresql/"


def test_public_dbmate_history_applies_rolls_back_and_reapplies_in_timestamp_form(
    database_url: str, tmp_path: Path
) -> None:
    """edda's PostgreSQL history as its wheel ships it, fetched from PyPI (never installed:
    only its files are wanted): one dbmate file named by a 14-digit timestamp (its up creates
    14 tables with ``IF NOT EXISTS``; its ``-- migrate:down`` drops 13 of them). Taken as it is,
    with no rename: applied, rolled back to the start, applied again to an identical schema.
    The table its down forgets (``system_locks``, upstream's omission) is all that is left."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    with zipfile.ZipFile(pypi_wheel(EDDA)) as wheel:
        for member in wheel.namelist():
            if member.startswith(EDDA_POSTGRESQL) and member.endswith(".sql"):
                (folder / member.removeprefix(EDDA_POSTGRESQL)).write_bytes(wheel.read(member))
    assert sorted(path.name for path in folder.iterdir()) == ["20251217000000_initial_schema.sql"]
    flags = ("--migrations-dir", str(folder))
    empty = asyncio.run(dump_schema(database_url))
    pending = run_cli("--status", *flags, database_url=database_url)
    assert pending.returncode == 0, pending.stderr
    assert "20251217000000_initial_schema: PENDING" in pending.stdout, pending.stdout
    up = run_cli(*flags, database_url=database_url)
    assert up.returncode == 0, up.stderr[-3000:]
    assert '"applied_count": 1,' in up.stderr, up.stderr[-500:]
    applied = run_cli("--status", *flags, database_url=database_url)
    assert "20251217000000_initial_schema: APPLIED" in applied.stdout, applied.stdout
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    first = asyncio.run(dump_schema(database_url))
    assert {"workflow_instances", "workflow_history", "outbox_events"} <= asyncio.run(
        table_names(database_url)
    )
    down = run_cli("--rollback", "--to", "0", *flags, database_url=database_url)
    assert down.returncode == 0, down.stderr[-3000:]
    rolled_back = run_cli("--status", *flags, database_url=database_url)
    assert "20251217000000_initial_schema: PENDING" in rolled_back.stdout, rolled_back.stdout
    assert asyncio.run(dump_schema(database_url)) != empty
    assert asyncio.run(table_names(database_url)) == {"schema_migrations", "system_locks"}
    assert (
        "DROP TABLE IF EXISTS system_locks"
        not in (folder / "20251217000000_initial_schema.sql").read_text()
    )
    again = run_cli(*flags, database_url=database_url)
    assert again.returncode == 0, again.stderr[-3000:]
    assert asyncio.run(dump_schema(database_url)) == first


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("--from", "dbmate", "--export-from", "a.ini", "--migrations-dir", "m"),
            "is for --from alembic",
        ),
        (("--from", "alembic", "--export-from", "a.ini"), "needs --migrations-dir"),
        (
            ("--from", "alembic", "--export-from", "nope.ini", "--migrations-dir", "m"),
            "nope.ini: no such file",
        ),
        (
            ("--from", "alembic", "--export-from", "INI", "--migrations-dir", "FULL"),
            "already exists",
        ),
    ],
    ids=["other-tool", "no-folder", "no-ini", "folder-not-empty"],
)
def test_alembic_export_is_refused_before_writing(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    pytest.importorskip("alembic")
    ini = _alembic_project(tmp_path / "project", "postgresql://", ALEMBIC_REVISIONS)
    full = write_migrations(tmp_path / "full", {"001_a1b2c3d4e5f6_create_accounts.sql": "x"})
    named = {"INI": str(ini), "FULL": str(full), "m": str(tmp_path / "m")}
    result = run_cli("adopt", *(named.get(a, a) for a in args), database_url=None)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert says in result.stderr
    assert sorted(p.name for p in full.iterdir()) == ["001_a1b2c3d4e5f6_create_accounts.sql"]
    assert not (tmp_path / "m").exists()
