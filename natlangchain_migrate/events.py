"""Where the library's progress events go: structlog, unless the CLI asked for plain JSON.

In a process of its own (a container's init command) the CLI writes JSON lines
itself: importing structlog costs a start-up about as much as everything else we
import, and JSON lines need nothing of it. Everywhere else (an application awaiting
``migrate()``, the CLI in a terminal, tests with ``structlog.testing.capture_logs``)
each event goes to ``structlog.get_logger("natlangchain_migrate")``, imported on the
first event, so the application's structlog or stdlib-logging configuration applies.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "natlangchain_migrate"

# (level, event, fields) -> None
Sink = Callable[[str, str, dict[str, Any]], None]

_sink: Sink | None = None
_structlog_logger: Any = None

# A fleet run's scope for the events of one target, set in that target's task: its fields
# (``target=``) go into every event, and with ``quiet`` its debug and info events are dropped
# (a thousand tenants' "Applying:" lines would bury the fleet's own progress lines).
_scope: ContextVar[tuple[dict[str, Any], bool] | None] = ContextVar("event_scope", default=None)


@contextmanager
def scoped_events(fields: dict[str, Any], *, quiet: bool) -> Iterator[None]:
    """Within it, tag this task's events with ``fields`` (and drop its debug and info ones
    if ``quiet``)."""
    token = _scope.set((fields, quiet))
    try:
        yield
    finally:
        _scope.reset(token)


class EventLog:
    """The library's logger: ``log.info("event", key=value, ...)``, as with structlog."""

    def debug(self, event: str, **fields: Any) -> None:
        _emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        _emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        _emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        _emit("error", event, fields)


log = EventLog()


def _emit(level: str, event: str, fields: dict[str, Any]) -> None:
    scope = _scope.get()
    if scope is not None:
        if scope[1] and level in ("debug", "info"):
            return
        fields = {**scope[0], **fields}
    if _sink is not None:
        _sink(level, event, fields)
        return
    global _structlog_logger
    if _structlog_logger is None:
        import structlog

        _structlog_logger = structlog.get_logger(LOGGER_NAME)
    getattr(_structlog_logger, level)(event, **fields)


def send_events_to(sink: Sink | None) -> None:
    """Route every event to ``sink`` (None: back to structlog)."""
    global _sink
    _sink = sink


class JsonLines:
    """A sink writing what structlog's JSONRenderer would, with level and UTC timestamp,
    at INFO and above, every string scrubbed of the given secrets."""

    _LEVELS = ("info", "warning", "error")

    def __init__(self, stream: TextIO | None = None, *, secrets: Iterable[str] = ()) -> None:
        self.stream = stream
        self.secrets = [secret for secret in secrets if secret]

    def __call__(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if level not in self._LEVELS:
            return
        record = {**fields, "event": event, "level": level, "timestamp": _now()}
        if self.secrets:
            record = {key: self._scrub(value) for key, value in record.items()}
        stream = self.stream or sys.stderr
        stream.write(json.dumps(record, default=repr) + "\n")
        stream.flush()

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, list | tuple):
            return [self._scrub(item) for item in value]
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        return value


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
