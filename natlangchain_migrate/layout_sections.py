"""The layouts whose one file holds both directions in sections: goose's annotations,
dbmate's ``-- migrate:up`` / ``-- migrate:down`` and node-pg-migrate's ``-- Up Migration`` /
``-- Down Migration`` (layouts.py picks the layout; this splits one file).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.versions import parse_version

if TYPE_CHECKING:
    from importlib.abc import Traversable

LEADING = re.compile(r"^(?P<version>\d+)_?(?P<label>[^/]*?)\.sql$")
GOOSE_LINE = re.compile(r"^--\s*\+goose\s+(?P<command>.*?)\s*$")
DBMATE_LINE = re.compile(r"^--\s*migrate:(?P<section>up|down)(?P<options>.*)$")
# node-pg-migrate's own test (src/sqlMigration.ts): a line starting ``-- up migration``,
# any case, more dashes allowed; detection asks for the marker alone on its line.
NODE_PG_SPLIT = re.compile(r"^\s*--[\s-]*(?P<section>up|down)\s+migration", re.IGNORECASE)
# Our directive, put before a down section that dbmate or goose runs without a transaction.
NO_TRANSACTION_DIRECTIVE = "-- natlangchain: no-transaction\n"
NODE_PG_MARKER = re.compile(r"^--[\s-]*(up|down)\s+migration$", re.IGNORECASE)


class LayoutFile(NamedTuple):
    """One migration as a layout defines it: what discovery.py needs to make a Migration."""

    version: int
    name: str
    up: Traversable
    up_sql: str
    down: Traversable | None = None
    down_sql: str | None = None
    no_transaction: bool = False
    filename: str | None = None  # when the file's own name is not unique (prisma's)
    # The up section with every other line of its file left blank, so that the server's
    # error positions are the file's lines; up_sql (the section alone) stays what the
    # checksum covers. None when up_sql is the whole file.
    up_run: str | None = None


def _in_place(lines: list[str], kept: list[str]) -> str:
    """``lines`` with each one that is not in ``kept`` (taken from them, in order) left blank."""
    out, next_kept = [], 0
    for line in lines:
        if next_kept < len(kept) and kept[next_kept] is line:
            out.append(line)
            next_kept += 1
        else:
            out.append("\n" if line.endswith(("\n", "\r")) else "")
    return "".join(out)


_OUR_DIRECTIVE = re.compile(r"^--\s*natlangchain:")


def _directive_above(entry: Traversable, number: int, line: str, up: str) -> None:
    """Refuse our directive on a line above the file's first section marker, which no
    section holds (the tool ignores such lines, and so would we, silently)."""
    if _OUR_DIRECTIVE.match(line.strip()):
        raise ConfigurationError(
            f"{entry.name}:{number}: '{line.strip()}' is above the file's first section "
            f"marker, where it applies to nothing; move it below '{up}' (the up section's "
            "directives come first in it)"
        )


def leading_version(name: str) -> int:
    found = LEADING.match(name)
    if found is None:
        raise ConfigurationError(f"{name}: name the file VERSION_name.sql")
    return parse_version(name, found["version"])


def goose(entry: Traversable, text: str) -> LayoutFile:
    """Split a goose file at its annotations (goose's sqlparser: lines starting ``-- +goose``)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    no_transaction = False
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        found = GOOSE_LINE.match(line.strip())
        if found is None:
            if current is not None:
                current.append(line)
            else:
                _directive_above(entry, number, line, "-- +goose Up")
            continue
        command = found["command"]
        if command in ("Up", "Down"):
            if command in sections:
                raise ConfigurationError(
                    f"{entry.name}:{number}: a second '-- +goose {command}'; keep one"
                )
            current = sections.setdefault(command, [])
        elif command == "NO TRANSACTION":
            no_transaction = True
        elif command in ("StatementBegin", "StatementEnd"):
            if current is not None:
                current.append(line)  # a comment here; pglast keeps the statement whole
        elif command.startswith("ENVSUB"):
            raise ConfigurationError(
                f"{entry.name}:{number}: goose's ENVSUB (environment substitution) is not "
                "supported here; write the values into the file"
            )
        else:
            raise ConfigurationError(
                f"{entry.name}:{number}: unknown goose annotation '-- +goose {command}'; "
                "use Up, Down, StatementBegin, StatementEnd or NO TRANSACTION"
            )
    if "Up" not in sections:
        raise ConfigurationError(
            f"{entry.name}: a goose migration needs a '-- +goose Up' line; add it"
        )
    down = sections.get("Down")
    return LayoutFile(
        version=leading_version(entry.name),
        name=entry.name.removesuffix(".sql"),
        up=entry,
        up_sql="".join(sections["Up"]),
        down=entry if down is not None else None,
        down_sql=_down_with_option("".join(down), "false" if no_transaction else None)
        if down is not None
        else None,
        no_transaction=no_transaction,
        up_run=_in_place(lines, sections["Up"]),
    )


def dbmate(entry: Traversable, text: str) -> LayoutFile:
    """Split a dbmate file at ``-- migrate:up`` / ``-- migrate:down`` (their options after)."""
    sections: dict[str, list[str]] = {}
    options: dict[str, str] = {}
    current: list[str] | None = None
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        found = DBMATE_LINE.match(line.strip())
        if found is None:
            if current is not None:
                current.append(line)
            else:
                _directive_above(entry, number, line, "-- migrate:up")
            continue
        section = found["section"]
        if section in sections:
            raise ConfigurationError(
                f"{entry.name}:{number}: a second '-- migrate:{section}'; keep one"
            )
        for option in found["options"].split():
            key, _, value = option.partition(":")
            if key != "transaction" or value not in ("true", "false"):
                raise ConfigurationError(
                    f"{entry.name}:{number}: unknown dbmate option {option!r}; dbmate's "
                    "only option is transaction:false"
                )
            options[section] = value
        current = sections.setdefault(section, [])
    if "up" not in sections:
        raise ConfigurationError(f"{entry.name}: a dbmate migration needs '-- migrate:up'")
    down = sections.get("down")
    return LayoutFile(
        version=leading_version(entry.name),
        name=entry.name.removesuffix(".sql"),
        up=entry,
        up_sql="".join(sections["up"]),
        down=entry if down is not None else None,
        down_sql=_down_with_option("".join(down), options.get("down"))
        if down is not None
        else None,
        no_transaction=options.get("up") == "false",
        up_run=_in_place(lines, sections["up"]),
    )


def _down_with_option(sql: str, transaction: str | None) -> str:
    """dbmate's ``transaction:false`` on the down section, as our directive."""
    return f"{NO_TRANSACTION_DIRECTIVE}{sql}" if transaction == "false" else sql


def node_pg_migrate(entry: Traversable, text: str) -> LayoutFile:
    """Split a node-pg-migrate SQL file at ``-- Up Migration`` / ``-- Down Migration``.

    As node-pg-migrate does: a file with no marker is all up. A down marker without an up
    marker is refused (node-pg-migrate would run the down section as part of the up).
    node-pg-migrate runs every SQL migration in a transaction: it has no marker for
    running one outside (``pgm.noTransaction()`` is JavaScript); ours works in the up section.
    """
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        found = NODE_PG_SPLIT.match(line)
        if found is None:
            if current is not None:
                current.append(line)
            continue
        section = found["section"].lower()
        if section in sections:
            raise ConfigurationError(
                f"{entry.name}:{number}: a second '-- {section.title()} Migration'; keep one"
            )
        current = sections.setdefault(section, [])
    if "up" in sections:  # else the whole file is up, directives above too
        for number, line in enumerate(lines, start=1):
            if NODE_PG_SPLIT.match(line):
                break
            _directive_above(entry, number, line, "-- Up Migration")
    if "down" in sections and "up" not in sections:
        raise ConfigurationError(
            f"{entry.name}: '-- Down Migration' without '-- Up Migration' above the up SQL; "
            "add that line (node-pg-migrate would run the down section as part of the up)"
        )
    down = sections.get("down")
    return LayoutFile(
        version=leading_version(entry.name),
        name=entry.name.removesuffix(".sql"),
        up=entry,
        up_sql="".join(sections["up"]) if "up" in sections else text,
        down=entry if down is not None else None,
        down_sql="".join(down) if down is not None else None,
        up_run=_in_place(lines, sections["up"]) if "up" in sections else None,
    )
