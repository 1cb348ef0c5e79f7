"""A migration file's header directives: ``-- natlangchain: key value`` lines in the
comment block that opens the file (no-transaction, timeouts, required extensions, lint
opt-outs, backfill). Read from a head of the file, so a big file is never read whole."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from natlangchain_migrate.durations import is_duration
from natlangchain_migrate.errors import ConfigurationError

_DIRECTIVE = re.compile(r"^--\s*natlangchain:\s*(?P<key>[a-z-]+)\s*(?P<value>.*?)\s*$")
_EXTENSION = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(\s*>=\s*(?P<version>[0-9][0-9.]*))?$")
_LINT_IGNORE = re.compile(r"^(?P<rule>[a-z][a-z0-9-]*)\s+(?P<reason>\S.*)$")


class ExtensionRequirement(NamedTuple):
    """An extension a migration needs, optionally with a lowest version."""

    name: str
    min_version: str | None = None


class LintIgnore(NamedTuple):
    """A ``lint-ignore RULE reason`` line: the rule is not reported for this file."""

    rule: str
    reason: str
    line: int


class Directives(NamedTuple):
    """Per-file settings read from ``-- natlangchain: ...`` lines in the file's header."""

    no_transaction: bool = False
    pg_lock_timeout: str | None = None  # the lock-timeout line: PostgreSQL's lock_timeout
    statement_timeout: str | None = None
    requires_extensions: tuple[ExtensionRequirement, ...] = ()
    lint_ignores: tuple[LintIgnore, ...] = ()
    backfill: str | None = None  # the backfill line's settings (backfill.py reads them)


def parse_directives(filename: str, sql: str) -> Directives:
    """Read ``-- natlangchain: key value`` lines from the comment block that opens the file."""
    settings: dict[str, str] = {}
    extensions: list[ExtensionRequirement] = []
    lint_ignores: list[LintIgnore] = []
    for number, raw in enumerate(_header_lines(sql), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        found = _DIRECTIVE.match(line)
        if found is None:
            continue
        key, value = found["key"], found["value"]
        where = f"{filename}:{number}"
        if key == "no-transaction" and not value:
            settings[key] = "yes"
        elif key in ("lock-timeout", "statement-timeout") and is_duration(value):
            settings[key] = value
        elif key == "requires-extension" and (ext := _EXTENSION.match(value)):
            extensions.append(ExtensionRequirement(ext["name"], ext["version"]))
        elif key == "lint-ignore" and (ignore := _LINT_IGNORE.match(value)):
            lint_ignores.append(LintIgnore(ignore["rule"], ignore["reason"], number))
        elif key == "backfill" and value:
            settings[key] = value
        elif key == "lint-ignore":
            raise ConfigurationError(
                f"{where}: bad directive '{line}'; write lint-ignore RULE REASON, with the "
                "reason this file may break the rule"
            )
        else:
            raise ConfigurationError(
                f"{where}: bad directive '{line}'; use no-transaction, lock-timeout 5s, "
                "statement-timeout 1min, requires-extension NAME [>= VERSION], "
                "lint-ignore RULE REASON or backfill table=NAME key=COLUMN"
            )
    return Directives(
        no_transaction="no-transaction" in settings,
        pg_lock_timeout=settings.get("lock-timeout"),
        statement_timeout=settings.get("statement-timeout"),
        requires_extensions=tuple(extensions),
        lint_ignores=tuple(lint_ignores),
        backfill=settings.get("backfill"),
    )


def _header_lines(sql: str) -> Iterator[str]:
    """The file's lines up to the first that is not a comment or blank (no full split)."""
    start = 0
    while start < len(sql):
        end = sql.find("\n", start)
        end = len(sql) if end < 0 else end
        line = sql[start:end]
        yield line
        if line.strip() and not line.lstrip().startswith("--"):
            return
        start = end + 1
