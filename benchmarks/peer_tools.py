"""The tools benchmarks/peers.py compares: each one's files, command, ledger and lock.

Every tool gets the same workload, written at run time from natlangchain_migrate/sql
so that it never drifts: 001 and 003 (002 needs pgvector; neither 001 nor 003 does:
``gen_random_uuid()`` is built in since PostgreSQL 13). Each file also records that its
body ran, in ``peers_applied``, so that a migration applied twice shows as two rows
whatever the tool's own ledger says. The adjustments each peer needs are here and
nowhere else: dbmate's ``-- migrate:up`` marker and ``sslmode``, yoyo's ``-- depends:``,
alembic's revision modules, ``env.py`` and ``postgresql+psycopg2://``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from natlangchain_migrate.discovery import shipped_migrations_dir

PYTHON = sys.executable
PEERS_DIR = Path(__file__).resolve().parent / "peers"
WORKLOAD_VERSIONS = ("001", "003")
MARKER_TABLE = "peers_applied"


def workload_files() -> dict[str, tuple[str, str]]:
    """version -> (file stem, SQL with the applied-once marker), from the shipped files."""
    folder = Path(str(shipped_migrations_dir()))
    files: dict[str, tuple[str, str]] = {}
    for version in WORKLOAD_VERSIONS:
        path = next(p for p in folder.glob(f"{version}_*.sql") if not p.name.endswith(".down.sql"))
        files[version] = (path.stem, path.read_text() + applied_marker(version))
    return files


def applied_marker(version: str) -> str:
    """Statements that leave one row per application of ``version``'s body."""
    return (
        f"\nCREATE TABLE IF NOT EXISTS {MARKER_TABLE} "
        "(version text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp());\n"
        f"INSERT INTO {MARKER_TABLE} (version) VALUES ('{version}');\n"
    )


@dataclass(frozen=True)
class Tool:
    """One migration tool: how to lay out the workload for it and how to run it."""

    name: str
    version: str
    write_files: Callable[[Path], None]
    command: Callable[[Path, str], list[str]]
    ledger_sql: str  # the versions the tool's own ledger records, one row per record
    expected_ledger: tuple[str, ...]
    lock_sql: str = ""  # rows left behind by a lock of the tool's own, if it has one
    env: Callable[[str], dict[str, str]] = field(default=lambda url: {})


# ours ---------------------------------------------------------------------------------


def write_ours_files(folder: Path) -> None:
    for stem, sql in workload_files().values():
        (folder / f"{stem}.sql").write_text(sql)


def ours() -> Tool:
    return Tool(
        name="natlangchain-migrate",
        version=importlib.metadata.version("natlangchain-migrate"),
        write_files=write_ours_files,
        command=lambda folder, url: [
            PYTHON,
            "-m",
            "natlangchain_migrate",
            "--migrations-dir",
            str(folder),
        ],
        env=lambda url: {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"},
        ledger_sql="SELECT lpad(version::text, 3, '0') FROM schema_migrations",
        expected_ledger=WORKLOAD_VERSIONS,
    )


# dbmate -------------------------------------------------------------------------------


def dbmate_binary() -> Path | None:
    """The Go binary the npm package bundles for this platform (not its node wrapper)."""
    machine = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system(), "")
    binary = PEERS_DIR / "node_modules" / "@dbmate" / f"{system}-{machine}" / "bin" / "dbmate"
    return binary if binary.is_file() else None


def write_dbmate_files(folder: Path) -> None:
    for stem, sql in workload_files().values():
        (folder / f"{stem}.sql").write_text(f"-- migrate:up\n{sql}\n-- migrate:down\n")


def dbmate() -> Tool | str:
    binary = dbmate_binary()
    if binary is None:
        return "not installed (benchmarks/peers.py --install)"
    reported = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    return Tool(
        name="dbmate",
        version=reported.stdout.split()[-1] if reported.returncode == 0 else "?",
        write_files=write_dbmate_files,
        # `migrate`, not `up`: like ours, it neither creates the database nor checks for it.
        command=lambda folder, url: [
            str(binary),
            "--migrations-dir",
            str(folder),
            "--no-dump-schema",
            "migrate",
        ],
        # lib/pq asks for TLS unless told not to; the benchmark server has none.
        env=lambda url: {"DATABASE_URL": f"{url}?sslmode=disable"},
        ledger_sql="SELECT version FROM schema_migrations",
        expected_ledger=WORKLOAD_VERSIONS,
    )


# yoyo ---------------------------------------------------------------------------------


def write_yoyo_files(folder: Path) -> None:
    previous = ""
    for stem, sql in workload_files().values():
        depends = f"-- depends: {previous}\n" if previous else ""
        (folder / f"{stem}.sql").write_text(depends + sql)
        previous = stem


def yoyo() -> Tool | str:
    if importlib.util.find_spec("yoyo") is None:
        return "not installed (benchmarks/peers.py --install)"
    return Tool(
        name="yoyo",
        version=importlib.metadata.version("yoyo-migrations"),
        write_files=write_yoyo_files,
        command=lambda folder, url: [
            PYTHON,
            "-m",
            "yoyo",
            "apply",
            "--batch",
            "--no-config-file",
            "--database",
            url,
            str(folder),
        ],
        ledger_sql="SELECT left(migration_id, 3) FROM _yoyo_migration",
        expected_ledger=WORKLOAD_VERSIONS,
        lock_sql="SELECT pid::text FROM yoyo_lock",
    )


def yoyo_noop(folder: Path, url: str) -> None:
    """What an API start-up calls: connect, read the files, lock, apply none, close."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(url)
    migrations = read_migrations(str(folder))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations))
    backend.connection.close()


# alembic ------------------------------------------------------------------------------

ALEMBIC_ENV = '''\
"""Generated by benchmarks/peer_tools.py: one transaction per revision, URL from the
environment (psycopg2 through SQLAlchemy), no logging configuration."""
import os

from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["PEERS_ALEMBIC_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
'''

ALEMBIC_REVISION = '''\
"""{stem}, generated from natlangchain_migrate/sql by benchmarks/peer_tools.py."""
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None

SQL = {sql!r}


def upgrade() -> None:
    # exec_driver_sql: the file as it is, with no bind-parameter parsing of its colons.
    op.get_bind().exec_driver_sql(SQL)


def downgrade() -> None:
    raise NotImplementedError
'''


def write_alembic_files(folder: Path) -> None:
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    (folder / "env.py").write_text(ALEMBIC_ENV)
    versions = folder / "versions"
    versions.mkdir()
    previous: str | None = None
    for version, (stem, sql) in workload_files().items():
        source = ALEMBIC_REVISION.format(
            stem=stem, revision=version, down_revision=previous, sql=sql
        )
        (versions / f"{stem}.py").write_text(source)
        previous = version


def alembic_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def alembic() -> Tool | str:
    for module in ("alembic", "sqlalchemy", "psycopg2"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed (benchmarks/peers.py --install)"
    return Tool(
        name="alembic",
        version=importlib.metadata.version("alembic"),
        write_files=write_alembic_files,
        command=lambda folder, url: [
            PYTHON,
            "-m",
            "alembic",
            "-c",
            str(folder / "alembic.ini"),
            "upgrade",
            "head",
        ],
        env=lambda url: {"PEERS_ALEMBIC_URL": alembic_url(url)},
        # alembic keeps only the head revision, not one row per migration.
        ledger_sql="SELECT version_num FROM alembic_version",
        expected_ledger=(WORKLOAD_VERSIONS[-1],),
    )


def alembic_noop(folder: Path, url: str) -> None:
    """What an API start-up calls: ``command.upgrade(config, "head")`` with nothing to do."""
    import os

    from alembic import command
    from alembic.config import Config

    os.environ["PEERS_ALEMBIC_URL"] = alembic_url(url)
    command.upgrade(Config(str(folder / "alembic.ini")), "head")


# all ----------------------------------------------------------------------------------

IN_PROCESS_NOOP: dict[str, Callable[[Path, str], None]] = {
    "yoyo": yoyo_noop,
    "alembic": alembic_noop,
}


def available_tools(names: list[str]) -> tuple[list[Tool], dict[str, str]]:
    """The tools asked for that can run here, and why each of the others cannot."""
    makers: dict[str, Callable[[], Tool | str]] = {
        "natlangchain-migrate": ours,
        "dbmate": dbmate,
        "yoyo": yoyo,
        "alembic": alembic,
    }
    tools: list[Tool] = []
    skipped: dict[str, str] = {}
    for name in names:
        made = makers[name]()
        if isinstance(made, Tool):
            tools.append(made)
        else:
            skipped[name] = made
    return tools, skipped


TOOL_NAMES = ("natlangchain-migrate", "dbmate", "yoyo", "alembic")


async def end_state_problems(url: str, tool: Tool) -> list[str]:
    """What is wrong with a database after ``tool``'s runs: a body applied other than once,
    a ledger that disagrees, an advisory lock or a lock row left behind."""
    conn = await asyncpg.connect(url)
    try:
        problems: list[str] = []
        has_marker = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", MARKER_TABLE)
        counts: dict[str, int] = {}
        if has_marker:
            rows = await conn.fetch(
                f"SELECT version, count(*) AS n FROM {MARKER_TABLE} GROUP BY version"
            )
            counts = {row["version"]: int(row["n"]) for row in rows}
        for version in WORKLOAD_VERSIONS:
            times = counts.get(version, 0)
            if times != 1:
                problems.append(f"{version} applied {times}x")
        try:
            recorded = sorted(str(row[0]) for row in await conn.fetch(tool.ledger_sql))
        except asyncpg.UndefinedTableError:
            recorded = []
        if recorded != sorted(tool.expected_ledger):
            problems.append(f"ledger {','.join(recorded) or 'empty'}")
        advisory = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        if advisory:
            problems.append(f"{advisory} advisory lock(s) held")
        if tool.lock_sql:
            try:
                left = await conn.fetch(tool.lock_sql)
            except asyncpg.UndefinedTableError:
                left = []
            if left:
                problems.append(f"{len(left)} lock row(s) left")
        return problems
    finally:
        await conn.close()
