"""Structured progress logs: JSON lines for machines, readable lines in a terminal.

The library only emits events (``structlog.get_logger("natlangchain_migrate")``)
and leaves configuration to the application: ``migrate()`` never calls
``structlog.configure`` or touches ``logging``, so an app's structlog set-up
handles our events as its own. The CLI configures them here, scrubbing every
string of the DSN's password. An app that logs with the standard library only
(uvicorn, gunicorn, Flask) calls ``route_to_stdlib_logging()``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

LOG_FORMATS = ("json", "console")


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


def configure_logging(log_format: str | None = None, *, secrets: Iterable[str] = ()) -> None:
    """Send events to stderr as JSON lines or console lines, at INFO and above."""
    chosen = log_format or default_format()
    renderer: Any
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _ScrubSecrets(secrets),
            renderer,
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
