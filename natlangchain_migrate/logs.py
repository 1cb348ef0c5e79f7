"""The CLI's logs: JSON lines for machines, readable lines in a terminal.

The library only emits events (``events.log``, structlog's by default) and leaves
configuration to the application: ``migrate()`` never calls ``structlog.configure``
or touches ``logging``, so an app's structlog set-up handles our events as its own.
An app that logs with the standard library only (uvicorn, gunicorn, Flask) calls
``route_to_stdlib_logging()``. The CLI configures them here: JSON lines are written
by ``events.JsonLines`` without importing structlog (a container's start-up is mostly
imports); a terminal gets structlog's console renderer. Every string in every event
is scrubbed of the DSN's password.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

from natlangchain_migrate.events import JsonLines, send_events_to

LOG_FORMATS = ("json", "console")

# In a terminal, the events a person follows read as one plain line each (dbmate's
# "Applying: 001_x.sql" / "Applied: 001_x.sql in 45ms"); the rest keep structlog's
# console form. JSON carries every event unchanged.
_PLAIN_LINES = {
    "migration_applying": "Applying: {file} ({n}/{of})",
    "migration_applied": "Applied: {file} in {duration_ms:.0f}ms",
    "migration_running": "  ... {file} still running after {elapsed_s:.0f}s",
    "migration_resuming": "Resuming: {file} at statement {statement} of {statements}",
    "backfill_progress": "  ... {file}: {rows_done} of about {rows_estimated} rows",
    "backfill_throttled": "  ... {file} waits: {reason} {value}, over {limit}",
    "up_to_date": "Up to date: {applied} migrations applied",
    "migrate_done": "Done: {applied_count} applied in {duration_ms:.0f}ms",
    "lock_waiting": "Waiting for the migration lock (held by pid {holder_pid})",
    "rollback_done": "Rolled back: {file}",
}


def default_format() -> str:
    """Console on a terminal, JSON otherwise (containers, CI, log shippers)."""
    return "console" if sys.stderr.isatty() else "json"


class _ScrubSecrets:
    """A processor that replaces every secret in every string value with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [secret for secret in secrets if secret]

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self.secrets:
            for key, value in event.items():
                if isinstance(value, str):
                    for secret in self.secrets:
                        value = value.replace(secret, "***")
                    event[key] = value
        return event


class _ConsoleLines:
    """Plain lines for the events in ``_PLAIN_LINES``, structlog's console form for
    the rest (and for any event whose fields do not fit its line)."""

    def __init__(self, colors: bool) -> None:
        import structlog

        self.fallback = structlog.dev.ConsoleRenderer(colors=colors)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        template = _PLAIN_LINES.get(str(event.get("event")))
        if template is not None:
            try:
                return template.format(**event)
            except (KeyError, ValueError, TypeError):
                pass
        return str(self.fallback(logger, method, event))


def configure_logging(log_format: str | None = None, *, secrets: Iterable[str] = ()) -> None:
    """Send events to stderr as JSON lines or console lines, at INFO and above."""
    if (log_format or default_format()) == "json":
        send_events_to(JsonLines(secrets=secrets))
        return
    import structlog

    send_events_to(None)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _ScrubSecrets(secrets),
            _ConsoleLines(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def route_to_stdlib_logging() -> bool:
    """Hand structlog events to the standard library's ``logging``, unless the app set up
    structlog itself; returns whether it did.

    Servers such as uvicorn and gunicorn configure ``logging``, not structlog, whose
    default prints to stdout past their handlers. Afterwards each event is a record of
    the ``natlangchain_migrate`` logger at the event's level, its message the event as
    one JSON object, handled by whatever the app or server configured (the records
    propagate to the root logger; ``logging.basicConfig(level=logging.INFO)`` shows them).
    An app that already called ``structlog.configure`` is left alone: its
    configuration handles our events.
    """
    import structlog

    send_events_to(None)  # events go through structlog, whatever the CLI set before
    if structlog.is_configured():
        return False
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: an app that configures structlog later still gets our events.
        cache_logger_on_first_use=False,
    )
    return True
