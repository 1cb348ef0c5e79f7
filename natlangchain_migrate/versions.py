"""Versions as people write them: any run of digits, compared as numbers.

``001``, ``42``, ``20240101120000`` (dbmate, goose, sqlx) and gobuffalo/pop's 20-digit
``20150100000001000000`` are all versions; Python's int holds any of them and the
ledger's column is widened from the seed's integer to numeric(38,0) when a folder
needs it (ledger.py). A folder is either numbered or timestamped: a mix usually means
a file from another branch or tool, so it is refused unless the folder says
``mixed-versions = true`` in its natlangchain-migrate.toml.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from natlangchain_migrate.errors import ConfigurationError

# The seed's ledger column is a PostgreSQL integer: versions above it need the wider one.
MAX_INTEGER = 2**31 - 1
MAX_BIGINT = 2**63 - 1
# What the widest column holds; bigint (19 digits) cannot hold pop's 20.
WIDE_VERSION = "numeric(38,0)"
MAX_DIGITS = 38
# The version column's types, narrowest first.
COLUMN_TYPES = ("smallint", "integer", "bigint", WIDE_VERSION)
# A version of this many digits or more is a timestamp (Unix seconds, YYYYMMDDHHMMSS).
TIMESTAMP_DIGITS = 10
_STAMP = "%Y%m%d%H%M%S"
# Versions of these widths that read as Unix time since 2001 to 2100 in that unit
# (seconds times the value) are continued as Unix time by ``new``.
_EPOCH_UNITS = {13: 1000, 19: 1_000_000_000}
_EPOCH_FROM, _EPOCH_TO = 978_307_200, 4_102_444_800


def parse_version(filename: str, digits: str) -> int:
    """A file name's leading digits as a number; more than the ledger holds is refused."""
    if len(digits.lstrip("0")) > MAX_DIGITS:
        raise ConfigurationError(
            f"{filename}: version {digits} has more than {MAX_DIGITS} digits, more than the "
            "ledger's numeric(38,0) column holds; shorten it"
        )
    return int(digits)


def column_type(widest: int) -> str:
    """The narrowest column that holds ``widest``: the seed's integer, bigint for 14-digit
    timestamps (an older release reads it as an int and goes on), numeric(38,0) above."""
    if widest <= MAX_INTEGER:
        return "integer"
    return "bigint" if widest <= MAX_BIGINT else WIDE_VERSION


def needs_widening(current: str | None, widest: int) -> str | None:
    """The type to widen a ``current`` column to for ``widest``, or None."""
    wanted = column_type(widest)
    if current not in COLUMN_TYPES:
        return None  # not a table we made (numeric already, or another shape)
    return wanted if COLUMN_TYPES.index(wanted) > COLUMN_TYPES.index(current) else None


def is_timestamp(version: int) -> bool:
    """Whether a version is written as a timestamp rather than a sequence number."""
    return len(str(version)) >= TIMESTAMP_DIGITS


def check_styles(names: Mapping[int, str], *, mixed_allowed: bool) -> None:
    """Refuse a folder with both numbered and timestamp versions unless it allows them."""
    if mixed_allowed or not names:
        return
    numbered = [names[v] for v in sorted(names) if not is_timestamp(v)]
    stamped = [names[v] for v in sorted(names) if is_timestamp(v)]
    if numbered and stamped:
        raise ConfigurationError(
            f"{numbered[-1]} is numbered and {stamped[0]} is a timestamp; keep one style "
            "per folder (rename one), or write mixed-versions = true in the folder's "
            "natlangchain-migrate.toml"
        )


def check_baseline_style(
    baseline: str, version: int, names: Mapping[int, str], *, mixed_allowed: bool
) -> None:
    """Refuse a baseline file whose version is in the other style than the folder's files,
    as a mixed folder is refused: it stands for the versions up to its own, so a timestamp
    one would cover every numbered file and a numbered one no timestamped file."""
    if mixed_allowed:
        return
    others = [names[v] for v in sorted(names) if is_timestamp(v) != is_timestamp(version)]
    if others:
        stamped = is_timestamp(version)
        style = "a timestamp" if stamped else "numbered"
        theirs = "numbered" if stamped else "timestamps"
        raise ConfigurationError(
            f"{baseline} is {style} and the folder's migrations are {theirs} (the newest is "
            f"{others[-1]}); rename it after the version of the newest file it covers "
            "(VERSION_name.baseline.sql), or write mixed-versions = true in the folder's "
            "natlangchain-migrate.toml"
        )


def next_version(existing: list[int], width: int, now: datetime | None = None) -> int:
    """The version ``new`` gives: the next number, or in a timestamped folder the current
    UTC time at the newest file's width (never below the newest + 1)."""
    if not existing:
        return 1
    newest = max(existing)
    if not is_timestamp(newest):
        return newest + 1
    moment = now or datetime.now(UTC)
    unit = _EPOCH_UNITS.get(width)
    if unit is not None and _EPOCH_FROM <= newest // unit <= _EPOCH_TO:
        # Unix time, not a calendar stamp: node-pg-migrate's milliseconds (13 digits),
        # golang-migrate's -format unixNano (19). A calendar stamp would sort above every
        # file that tool writes next.
        return max(int(moment.timestamp()) * unit, newest + 1)
    stamp = moment.strftime(_STAMP)
    stamped = int(stamp.ljust(width, "0")) if width >= len(stamp) else int(stamp)
    return max(stamped, newest + 1)
