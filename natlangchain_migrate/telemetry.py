"""OpenTelemetry spans for a run, its lock wait and each migration (the ``otel`` extra).

Spans are live once the process has imported ``opentelemetry.trace`` (an app
that set up a TracerProvider has); until then, or without ``opentelemetry-api``
installed, each is a no-op and nothing more is imported. Attributes follow the
database semantic conventions where they exist (``db.system``, ``db.namespace``,
``server.address``, ``error.type``); ours are under ``natlangchain_migrate.``. A
failure sets the span's status to ERROR and records the exception, with every
spelling of the DSN's password scrubbed from the message and stack trace.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Protocol

    from natlangchain_migrate.discovery import Migration
    from natlangchain_migrate.results import MigrationReport
    from natlangchain_migrate.settings import RunnerOptions

    AttributeValue = str | bool | int | float

    class SpanLike(Protocol):
        """What callers do with a span: add attributes."""

        def set_attribute(self, key: str, value: AttributeValue) -> None: ...


RUN_SPAN = "natlangchain_migrate.run"
LOCK_WAIT_SPAN = "natlangchain_migrate.lock_wait"
MIGRATION_SPAN = "natlangchain_migrate.migration"
OUTCOME = "natlangchain_migrate.outcome"


class _NoSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass


_NO_SPAN = _NoSpan()
# The run's attributes shared by every span in it, and its DSN (for scrubbing).
_run: ContextVar[tuple[Mapping[str, AttributeValue], str | None]] = ContextVar(
    "natlangchain_migrate_run", default=({}, None)
)


def _tracer() -> Any:
    """The tracer, or None when the process has not imported OpenTelemetry.

    We never import it ourselves: a process that has not imported it cannot have
    configured a TracerProvider, so its spans would go nowhere; the CLI and an app
    without tracing pay nothing, not even the ~6 ms import.
    """
    trace = sys.modules.get("opentelemetry.trace")
    return None if trace is None else trace.get_tracer("natlangchain_migrate")


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> Iterator[SpanLike]:
    """A span around the block; an exception of a type not in ``expected`` marks it ERROR."""
    tracer = _tracer()
    if tracer is None:
        yield _NO_SPAN
        return
    shared, dsn = _run.get()
    with tracer.start_as_current_span(
        name,
        attributes={**shared, **(attributes or {})},
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except expected:
            raise
        except BaseException as error:
            _record_failure(current, error, dsn)
            raise


@contextmanager
def run_span(options: RunnerOptions, *, dry_run: bool) -> Iterator[SpanLike]:
    """The span of one run; the spans inside it share its database attributes."""
    if _tracer() is None:
        yield _NO_SPAN
        return
    import os

    dsn = options.dsn or (None if options.pool else os.environ.get("DATABASE_URL"))
    token = _run.set((_database_attributes(dsn), dsn))
    try:
        with span(
            RUN_SPAN,
            {
                "db.operation.name": "migrate",
                "natlangchain_migrate.schema": options.schema,
                "natlangchain_migrate.lock_mode": options.lock.mode.value,
                "natlangchain_migrate.dry_run": dry_run,
            },
        ) as current:
            yield current
    finally:
        _run.reset(token)


def finish_run(current: SpanLike, report: MigrationReport) -> None:
    """The run's outcome: applied, up_to_date or dry_run, with its counts."""
    outcome = "dry_run" if report.dry_run else "applied" if report.applied else "up_to_date"
    current.set_attribute(OUTCOME, outcome)
    current.set_attribute("natlangchain_migrate.applied_count", len(report.applied))
    current.set_attribute("natlangchain_migrate.already_applied_count", len(report.already_applied))
    current.set_attribute("natlangchain_migrate.duration_ms", report.duration_ms)


@contextmanager
def lock_wait_span(key: int, mode: str, not_needed: type[BaseException]) -> Iterator[SpanLike]:
    """The span of waiting for the advisory lock: its outcome and how long it took
    (``lock_wait_ms``), also when it timed out or another runner did the work."""
    started = time.monotonic()
    attributes: dict[str, AttributeValue] = {
        "natlangchain_migrate.lock_key": key,
        "natlangchain_migrate.lock_mode": mode,
    }
    with span(LOCK_WAIT_SPAN, attributes, expected=(not_needed,)) as current:
        try:
            yield current
        except not_needed:
            current.set_attribute(OUTCOME, "not_needed")  # another runner applied everything
            raise
        else:
            current.set_attribute(OUTCOME, "acquired")
        finally:
            waited_ms = round((time.monotonic() - started) * 1000, 1)
            current.set_attribute("natlangchain_migrate.lock_wait_ms", waited_ms)


def migration_span(migration: Migration) -> AbstractContextManager[SpanLike]:
    """The span of applying one migration (a repeatable ``R__`` file has no version)."""
    attributes: dict[str, AttributeValue] = {
        "natlangchain_migrate.name": migration.name,
        "natlangchain_migrate.transaction": not migration.directives.no_transaction,
    }
    from natlangchain_migrate.discovery import is_repeatable_file

    if is_repeatable_file(migration.filename):
        attributes["natlangchain_migrate.repeatable"] = True
    else:
        attributes["natlangchain_migrate.version"] = migration.version
    return span(MIGRATION_SPAN, attributes)


def migration_applied(current: SpanLike, duration_ms: float) -> None:
    current.set_attribute(OUTCOME, "applied")
    current.set_attribute("natlangchain_migrate.duration_ms", duration_ms)


def _database_attributes(dsn: str | None) -> dict[str, AttributeValue]:
    """db.system, db.namespace and server.address/port from the DSN; never its password."""
    attributes: dict[str, AttributeValue] = {"db.system": "postgresql"}
    if not dsn:
        return attributes
    from urllib.parse import urlsplit

    from natlangchain_migrate.dsn import as_url
    from natlangchain_migrate.errors import ConfigurationError

    try:
        parts = urlsplit(as_url(dsn))
        port = parts.port
    except (ValueError, ConfigurationError):  # unreadable: the run's own error says so
        return attributes
    if parts.path.strip("/"):
        attributes["db.namespace"] = parts.path.strip("/")
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    if port:
        attributes["server.port"] = port
    return attributes


def _record_failure(current: Any, error: BaseException, dsn: str | None) -> None:
    """ERROR status, error.type and the exception event, each scrubbed of the password."""
    import traceback

    from opentelemetry.trace import Status, StatusCode

    from natlangchain_migrate.dsn import scrub

    message = scrub(str(error), dsn)
    current.set_attribute(OUTCOME, _failure_outcome(error))
    current.set_attribute("error.type", type(error).__qualname__)
    for key in ("sqlstate", "location"):
        value = getattr(error, key, None)
        if isinstance(value, str):
            current.set_attribute(f"natlangchain_migrate.{key}", value)
    current.record_exception(
        error,
        attributes={
            "exception.message": message,
            "exception.stacktrace": scrub("".join(traceback.format_exception(error)), dsn),
        },
    )
    current.set_status(Status(StatusCode.ERROR, message))


def _failure_outcome(error: BaseException) -> str:
    from natlangchain_migrate.errors import LockTimeoutError

    return "timeout" if isinstance(error, LockTimeoutError) else "failed"
