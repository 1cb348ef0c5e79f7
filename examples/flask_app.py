"""A Flask app factory that applies the migrations before it returns the app.

    DATABASE_URL=postgresql://... gunicorn -w 8 examples.flask_app:app

Each gunicorn worker imports this module and so calls ``create_app()``: the
first worker takes the advisory lock and applies what is pending, the others
wait for it and find the work done (with ``--preload`` the master does it once).
Then ``start_heartbeat()`` keeps the process in the replica registry from a daemon
thread (with ``--preload``, the master's, which lives as long as the server), so a
contract part that drops what this release reads waits until it is gone.
``NATLANGCHAIN_MIGRATE_DIR`` picks another migrations folder and ``HEARTBEAT_INTERVAL``
(seconds, default 15) sets the beat.
"""

from __future__ import annotations

import logging
import os

import psycopg
from flask import Flask

from natlangchain_migrate import route_to_stdlib_logging, run_migrations, start_heartbeat

# The highest version applied whole (an interrupted no-transaction file is not).
SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations WHERE complete"


def create_app() -> Flask:
    """Migrate, then build the app; a failed migration raises, and the worker does not boot."""
    # gunicorn configures its own loggers only: give ours a handler, at INFO.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
    )
    route_to_stdlib_logging()
    dsn = os.environ["DATABASE_URL"]
    folder = os.environ.get("NATLANGCHAIN_MIGRATE_DIR")  # default: the shipped migrations
    run_migrations(dsn, migrations_dir=folder)
    interval = float(os.environ.get("HEARTBEAT_INTERVAL", "15"))
    start_heartbeat(dsn, migrations_dir=folder, interval=interval)  # stopped at exit
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        """Up, with the schema version this worker reads and which worker answered."""
        with psycopg.connect(dsn) as conn:
            row = conn.execute(SCHEMA_VERSION).fetchone()
        return {"status": "ok", "schema_version": row[0] if row else None, "pid": os.getpid()}

    return app


app = create_app()
