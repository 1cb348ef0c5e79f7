"""Durations and elapsed time: one parser for PostgreSQL-style durations, one stopwatch."""

from __future__ import annotations

import re
import time

from natlangchain_migrate.errors import ConfigurationError

_DURATION = re.compile(r"^(?P<number>\d+)(?P<unit>ms|s|min|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, None: 0.001}


def is_duration(text: str) -> bool:
    """True for a duration we accept: digits, then ms, s, min or h (or nothing: ms, as
    PostgreSQL reads a bare lock_timeout)."""
    return _DURATION.match(text) is not None


def seconds(duration: str) -> float:
    """``500ms``, ``5s``, ``2min``, ``1h`` or a bare number of milliseconds, in seconds."""
    found = _DURATION.match(duration)
    if found is None:
        raise ConfigurationError(f"{duration!r} is not a duration; use e.g. 500ms, 5s, 2min")
    return int(found["number"]) * _UNIT_SECONDS[found["unit"]]


def check_duration(flag: str, value: str | None, keyword: str) -> None:
    """Refuse a setting that PostgreSQL would reject later, naming the flag and the
    library's keyword argument."""
    if value is not None and not is_duration(value):
        raise ConfigurationError(
            f"{flag} {value!r} is not a duration; use a number with ms, s, min or h (e.g. 5s) "
            f"(in the library: {keyword})"
        )


def ms_since(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.monotonic()`` reading), rounded to µs."""
    return round((time.monotonic() - started) * 1000, 3)
