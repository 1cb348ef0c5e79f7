"""The benchmark's floor for examples/flask_app.py: the same app whose factory does not
migrate (the database it is given is already migrated). A copy, not an import: importing
the example builds its app, which migrates."""

from __future__ import annotations

import logging
import os

import psycopg
from flask import Flask

from natlangchain_migrate import route_to_stdlib_logging

SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations WHERE complete"


def create_app() -> Flask:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
    )
    route_to_stdlib_logging()
    dsn = os.environ["DATABASE_URL"]
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(SCHEMA_VERSION).fetchone()
        return {"status": "ok", "schema_version": row[0] if row else None, "pid": os.getpid()}

    return app


app = create_app()
