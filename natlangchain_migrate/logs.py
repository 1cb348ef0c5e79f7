"""Structured progress logs: JSON lines for machines, readable lines in a terminal.

The library only emits events (``structlog.get_logger("natlangchain_migrate")``)
and leaves configuration to the application; the CLI configures them here.
Every string in every event is scrubbed of the DSN's password.
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
