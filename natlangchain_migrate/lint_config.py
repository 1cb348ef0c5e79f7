"""``lint``'s settings, read from ``[tool.natlangchain-migrate]`` in a pyproject.toml.

The table lives beside the project's other tool settings, so a team keeps its
excluded rules, each with a comment saying why, in version control. Every key is
checked: a misspelt one would silently lint with the wrong rules.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from natlangchain_migrate.errors import ConfigurationError

TABLE = "tool.natlangchain-migrate"
_KNOWN_KEYS = {"lint": ("exclude", "pg-version")}
_RULE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_PG_VERSION = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,2})?$")


class LintConfig(NamedTuple):
    """Rules left out everywhere, the PostgreSQL version squawk assumes, and their source."""

    exclude: tuple[str, ...] = ()
    pg_version: str | None = None
    source: Path | None = None


def load_lint_config(starts: Iterable[Path]) -> LintConfig:
    """The settings of the first pyproject.toml holding the table, from each start upward."""
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "pyproject.toml"
            if candidate.is_file() and (table := _our_table(candidate)) is not None:
                return _parse(candidate, table)
    return LintConfig()


def _our_table(path: Path) -> dict[str, Any] | None:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: not valid TOML ({error}); fix the file") from error
    table = document.get("tool", {}).get("natlangchain-migrate")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [{TABLE}] must be a table")
    return table


def _parse(path: Path, table: dict[str, Any]) -> LintConfig:
    for key, value in table.items():
        if key not in _KNOWN_KEYS:
            raise ConfigurationError(
                f"{path}: unknown key '{key}' in [{TABLE}]; known: {', '.join(_KNOWN_KEYS)}"
            )
        if not isinstance(value, dict):
            raise ConfigurationError(f"{path}: {key} in [{TABLE}] must be a table")
        for name in value:
            if name not in _KNOWN_KEYS[key]:
                raise ConfigurationError(
                    f"{path}: unknown key '{key}.{name}' in [{TABLE}]; known: "
                    + ", ".join(f"{key}.{known}" for known in _KNOWN_KEYS[key])
                )
    lint = table.get("lint", {})
    return LintConfig(
        exclude=_rule_list(path, lint.get("exclude", [])),
        pg_version=_pg_version(path, lint.get("pg-version")),
        source=path,
    )


def _rule_list(path: Path, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(rule, str) and _RULE_NAME.match(rule) for rule in value
    ):
        raise ConfigurationError(
            f"{path}: lint.exclude in [{TABLE}] must be a list of squawk rule names, "
            'such as ["prefer-text-field"]'
        )
    return tuple(value)


def _pg_version(path: Path, value: object) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _PG_VERSION.match(text):
        raise ConfigurationError(
            f"{path}: lint.pg-version in [{TABLE}] must be a PostgreSQL version such as "
            f'"15" or "15.4", not {value!r}'
        )
    return text
