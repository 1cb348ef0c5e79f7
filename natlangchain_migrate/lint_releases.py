"""Lint for two releases at once: what an expand part or a contract part must not do.

During a rolling deploy the release before this one keeps running against the
schema this migration's expand part (``NNN_name.sql``) leaves; its contract part
(``NNN_name.contract.sql``) runs once no replica of that release is alive, under
the release that ships it. This module reads each file's parse tree (pglast)
and tracks what the file itself creates: a table or column the file creates is
unknown to every running release, so changing it breaks nobody. Findings carry
squawk's rule names where squawk has the rule, so one exclusion or ignore covers
both, and lint.py keeps one finding per statement and rule.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from natlangchain_migrate.discovery import Migration, checksum, parse_directives
from natlangchain_migrate.errors import ConfigurationError

CONTRACT_SUFFIX = ".contract.sql"
_CONTRACT_FILE = re.compile(r"^(?P<version>\d+)_(?P<label>[A-Za-z0-9_]+)\.contract\.sql$")
_IGNORE_COMMENT = re.compile(r"^\s*--\s*squawk-ignore(?!-file)(?P<rules>[^\n]*)$")
_SERIAL_TYPES = frozenset({"smallserial", "serial2", "serial", "serial4", "bigserial", "serial8"})
RECIPES = "README: Changing the schema without downtime"

# The squawk rules whose verdict this module owns, per kind of file: in a parsed file a
# squawk finding of one of these is replaced by ours on the same statement, or dropped
# when the statement is fine here (a new table; a drop in a contract part).
EXPAND_RULES = frozenset(
    {
        "ban-drop-column",
        "ban-drop-table",
        "renaming-column",
        "renaming-table",
        "ban-set-schema",
        "changing-column-type",
        "adding-required-field",
        "adding-not-nullable-field",
        "ban-drop-default",
    }
)
# SET NOT NULL is a contract part's job: squawk's own lock advice for it stays.
CONTRACT_RULES = EXPAND_RULES - {"adding-not-nullable-field"}
# squawk's other "may break existing clients" drops: in a contract part they are the point
# (the running release no longer uses what it drops); in an expand part they take the
# advice to move them. Dropping the database stays squawk's alone.
OTHER_DROPS = frozenset(
    {
        "ban-drop-function",
        "ban-drop-view",
        "ban-drop-type",
        "ban-drop-sequence",
        "ban-drop-schema",
        "ban-drop-constraint",
        "ban-drop-not-null",
    }
)
_LOOSENING = frozenset({"ban-drop-constraint", "ban-drop-not-null"})


class ReleaseFinding(NamedTuple):
    """One statement that breaks a running release; offsets count characters from 0."""

    rule: str
    start: int
    end: int
    message: str


class _Column(NamedTuple):
    not_null: bool
    has_default: bool


def is_contract_part(filename: str) -> bool:
    """True for ``NNN_name.contract.sql``: it gets the contract rules, not the expand ones."""
    return filename.endswith(CONTRACT_SUFFIX)


def owned_rules(filename: str) -> frozenset[str]:
    """The squawk rules whose findings in this file this module decides."""
    return CONTRACT_RULES if is_contract_part(filename) else EXPAND_RULES


@contextlib.contextmanager
def without_contract_parts(folder: Path) -> Iterator[Path]:
    """The folder as discovery and the ledger reader can take it.

    Until discovery knows contract parts it refuses ``NNN_name.contract.sql`` as a
    misnamed file: lint shows it a copy of the folder without them (lint reads them
    with ``contract_parts``).
    """
    if not folder.is_dir() or not any(".contract." in p.name for p in folder.iterdir()):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="natlangchain-lint-") as scratch:
        for path in folder.iterdir():
            if path.is_file() and ".contract." not in path.name:
                shutil.copyfile(path, Path(scratch) / path.name)
        yield Path(scratch)


def adapt_squawk_message(filename: str, rule: str, message: str) -> str | None:
    """squawk's message for a rule this module does not decide, with the release advice
    where it applies; None drops the finding (a drop in a contract part)."""
    if rule not in OTHER_DROPS:
        return message
    if is_contract_part(filename):
        return None
    if rule in _LOOSENING:  # the old release's writes still pass: squawk's word stands
        return message
    return (
        f"{message.rstrip('.')}; if the release before this one still uses it, move the "
        f"drop to {_contract_file(filename)}"
    )


def _contract_file(filename: str) -> str:
    if filename.startswith("R__"):
        return "the contract part of a versioned migration (NNN_name.contract.sql)"
    return filename.removesuffix(".sql") + ".contract.sql"


def contract_parts(folder: Path) -> list[Migration]:
    """The folder's ``NNN_name.contract.sql`` files as migrations to lint, by version."""
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        match = _CONTRACT_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            sql = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ConfigurationError(
                f"{path.name}: not valid UTF-8 at byte {error.start}; save the file as UTF-8"
            ) from error
        found.append(
            Migration(
                version=int(match["version"]),
                name=path.name.removesuffix(".sql"),
                filename=path.name,
                sql=sql,
                checksum=checksum(sql),
                directives=parse_directives(path.name, sql),
            )
        )
    return found


def release_findings(migration: Migration) -> list[ReleaseFinding] | None:
    """What in this file breaks a running release; None when the file does not parse
    (squawk reports the syntax error)."""
    from pglast.parser import ParseError, parse_sql_json

    try:
        tree = json.loads(parse_sql_json(migration.sql))
    except ParseError:
        return None
    sql = migration.sql
    encoded = None if sql.isascii() else sql.encode("utf-8")
    check = _FileCheck(migration.filename)
    findings: list[ReleaseFinding] = []
    for raw in tree.get("stmts", []):
        begin = _characters(encoded, raw.get("stmt_location", 0))
        stop = (
            _characters(encoded, raw.get("stmt_location", 0) + raw["stmt_len"])
            if raw.get("stmt_len")
            else len(sql)
        )
        ((kind, node),) = raw["stmt"].items()
        start = begin + _leading_comments(sql[begin:stop])
        ignored = _ignored_rules(sql, start, stop)
        for rule, message in check.statement(kind, node, start):
            if not (rule in ignored or "*" in ignored):
                findings.append(ReleaseFinding(rule, start, stop, message))
    # A table renamed (or moved) with a view of its old name created in the same file
    # is still there for the old release: a simple view reads and writes through.
    return [
        f
        for f in findings
        if f.rule not in ("renaming-table", "ban-set-schema")
        or check.moved.get(f.start) not in check.views
    ]


class _FileCheck:
    """Walks one file's statements in order, remembering the tables and columns it adds."""

    def __init__(self, filename: str) -> None:
        self.contract = is_contract_part(filename)
        self.filename = filename
        self.new_tables: set[str] = set()
        self.views: set[str] = set()
        self.moved: dict[int, str] = {}  # statement start -> the table it renames or moves
        # Columns this file adds to a table that exists: new to readers, yet the running
        # release inserts rows without them.
        self.new_columns: dict[tuple[str, str], _Column] = {}

    def statement(self, kind: str, node: dict[str, Any], start: int) -> list[tuple[str, str]]:
        """The (rule, advice) pairs for one statement starting at ``start``."""
        if kind == "ViewStmt":
            self.views.add(node["view"]["relname"])
        elif kind == "CreateStmt":
            self.new_tables.add(node["relation"]["relname"])
        elif kind == "CreateTableAsStmt" and node.get("objtype") == "OBJECT_TABLE":
            self.new_tables.add(node["into"]["rel"]["relname"])
        elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            names = [item["List"]["items"][-1]["String"]["sval"] for item in node["objects"]]
            old = [name for name in names if name not in self.new_tables]
            return [] if self.contract else [self._drop_table(name) for name in old]
        elif kind == "RenameStmt":
            return self._rename(node, start)
        elif kind == "AlterObjectSchemaStmt" and node.get("objectType") == "OBJECT_TABLE":
            table = node["relation"]["relname"]
            if table not in self.new_tables:
                self.moved[start] = table
                return [("ban-set-schema", self._moved(f"moving table {table} to another schema"))]
        elif kind == "AlterTableStmt" and node.get("objtype") == "OBJECT_TABLE":
            table = node["relation"]["relname"]
            if table not in self.new_tables:
                found = (self._alter(table, cmd["AlterTableCmd"]) for cmd in node.get("cmds", []))
                return [item for item in found if item is not None]
        return []

    def _alter(self, table: str, cmd: dict[str, Any]) -> tuple[str, str] | None:
        subtype, column = cmd.get("subtype"), cmd.get("name", "")
        added = self.new_columns.get((table, column))
        if subtype == "AT_AddColumn":
            definition = cmd["def"]["ColumnDef"]
            state = _column_state(definition)
            self.new_columns[(table, definition["colname"])] = state
            if state.not_null and not state.has_default:
                return ("adding-required-field", self._required(table, definition["colname"]))
        elif subtype == "AT_DropColumn" and added is None and not self.contract:
            return ("ban-drop-column", self._dropped(f"dropping column {table}.{column}"))
        elif subtype == "AT_AlterColumnType" and added is None:
            return ("changing-column-type", self._retyped(table, column))
        elif subtype == "AT_SetNotNull" and added is not None:
            self.new_columns[(table, column)] = added._replace(not_null=True)
            if not added.has_default and not added.not_null:
                return ("adding-required-field", self._required(table, column))
        elif subtype == "AT_SetNotNull" and not self.contract:
            return ("adding-not-nullable-field", self._not_null(table, column))
        elif subtype == "AT_ColumnDefault" and not _has_value(cmd.get("def")):
            if added is not None:
                self.new_columns[(table, column)] = added._replace(has_default=False)
                if added.not_null and added.has_default:
                    return ("adding-required-field", self._required(table, column))
            elif not self.contract:
                return ("ban-drop-default", self._no_default(table, column))
        elif subtype == "AT_ColumnDefault" and added is not None:
            self.new_columns[(table, column)] = added._replace(has_default=True)
        return None

    def _rename(self, node: dict[str, Any], start: int) -> list[tuple[str, str]]:
        kind = node.get("renameType")
        table = node.get("relation", {}).get("relname", "")
        if kind == "OBJECT_TABLE" and table in self.new_tables:
            self.new_tables.add(node["newname"])
        elif kind == "OBJECT_TABLE":
            self.moved[start] = table
            return [("renaming-table", self._moved(f"renaming table {table}"))]
        elif kind == "OBJECT_COLUMN" and node.get("relationType") == "OBJECT_TABLE":
            old, new = node["subname"], node["newname"]
            if table in self.new_tables:
                return []
            if (table, old) in self.new_columns:
                self.new_columns[(table, new)] = self.new_columns.pop((table, old))
                return []
            return [("renaming-column", self._renamed(table, old, new))]
        return []

    # Advice: one sentence each, naming the contract part and the two steps.

    def _contract_file(self) -> str:
        return _contract_file(self.filename)

    def _drop_table(self, table: str) -> tuple[str, str]:
        return ("ban-drop-table", self._dropped(f"dropping table {table}"))

    def _dropped(self, what: str) -> str:
        return (
            f"{what} breaks the release before this one, which still uses it during a "
            f"rolling deploy; move it to {self._contract_file()}, which runs once no "
            "replica of that release is alive"
        )

    def _moved(self, what: str) -> str:
        if self.contract:
            return (
                f"{what} in a contract part breaks the release running it, which uses the "
                "old name; rename in the expand part with a view of the old name over the "
                f"table, and drop that view here ({RECIPES})"
            )
        return (
            f"{what} breaks the release before this one, which queries it by its old name; "
            "in two steps: here rename it and create a view of the old name over it (a "
            "simple view is updatable, so the old release keeps reading and writing), "
            f"then drop the view in {self._contract_file()} ({RECIPES})"
        )

    def _renamed(self, table: str, old: str, new: str) -> str:
        who = (
            "the release running the contract part, which was written for both schemas"
            if self.contract
            else "the release before this one, which still reads and writes " + old
        )
        where = "in the expand part" if self.contract else "here"
        return (
            f"renaming column {table}.{old} to {new} breaks {who}; in two steps: {where} add "
            f"{new}, a trigger that keeps {old} and {new} equal and a backfill, then drop "
            f"{old} and the trigger in {self._contract_file_or_here()} (README recipe "
            "'Rename a column')"
        )

    def _retyped(self, table: str, column: str) -> str:
        who = (
            "the release running the contract part, which uses the old type"
            if self.contract
            else "the release before this one, which reads and writes the old type"
        )
        where = "in the expand part" if self.contract else "here"
        return (
            f"changing the type of {table}.{column} breaks {who} (and rewrites the table "
            f"under an exclusive lock); in two steps: {where} add a column of the new type, "
            f"a trigger that keeps both in step and a backfill, then drop {column} in "
            f"{self._contract_file_or_here()} (README recipe 'Change a column type')"
        )

    def _required(self, table: str, column: str) -> str:
        who = (
            "the release running the contract part inserts rows without it"
            if self.contract
            else "the release before this one inserts rows without it"
        )
        return (
            f"column {table}.{column} is NOT NULL without a default, and {who}; add it "
            f"nullable (or with a default) {'in the expand part' if self.contract else 'here'},"
            f" backfill it, and SET NOT NULL in {self._contract_file_or_here()} (README "
            "recipe 'Add a NOT NULL column')"
        )

    def _not_null(self, table: str, column: str) -> str:
        return (
            f"SET NOT NULL on {table}.{column} fails the writes of the release before this "
            f"one that leave it NULL; move it to {self._contract_file()}, after a backfill "
            "here"
        )

    def _no_default(self, table: str, column: str) -> str:
        return (
            f"dropping the default of {table}.{column} changes what the release before this "
            "one gets when its inserts leave the column out; move it to "
            f"{self._contract_file()}"
        )

    def _contract_file_or_here(self) -> str:
        return "this contract part" if self.contract else self._contract_file()


def _column_state(definition: dict[str, Any]) -> _Column:
    kinds = {c["Constraint"]["contype"]: c["Constraint"] for c in definition.get("constraints", [])}
    type_name = definition.get("typeName", {}).get("names", [{}])[-1].get("String", {})
    has_default = (
        _has_value(kinds.get("CONSTR_DEFAULT", {}).get("raw_expr"))
        or "CONSTR_IDENTITY" in kinds
        or "CONSTR_GENERATED" in kinds
        or type_name.get("sval") in _SERIAL_TYPES
    )
    not_null = "CONSTR_NOTNULL" in kinds or "CONSTR_PRIMARY" in kinds
    return _Column(not_null=not_null, has_default=has_default)


def _has_value(expression: dict[str, Any] | None) -> bool:
    """A default expression other than NULL (``SET DEFAULT NULL`` drops the default)."""
    if expression is None:
        return False
    return not expression.get("A_Const", {}).get("isnull", False)


def _characters(encoded: bytes | None, byte_offset: int) -> int:
    """libpg_query counts bytes; Python strings count characters."""
    if encoded is None:
        return byte_offset
    return len(encoded[:byte_offset].decode("utf-8", errors="ignore"))


def _leading_comments(text: str) -> int:
    """How many characters of blanks and ``--`` comment lines open a statement's text."""
    position = 0
    while position < len(text):
        rest = text[position:]
        stripped = rest.lstrip()
        position += len(rest) - len(stripped)
        if not stripped.startswith("--"):
            break
        newline = stripped.find("\n")
        position += len(stripped) if newline < 0 else newline + 1
    return position


def _ignored_rules(sql: str, start: int, stop: int) -> set[str]:
    """Rules a ``-- squawk-ignore RULE, ...`` comment switches off for this statement: on
    the line above it or inside it, as squawk reads them ("*": every rule)."""
    line_start = sql.rfind("\n", 0, start) + 1
    above = sql.rfind("\n", 0, line_start - 1) + 1 if line_start else 0
    region = sql[above:stop]
    rules: set[str] = set()
    for line in region.split("\n"):
        comment = line[line.find("--") :] if "--" in line else ""
        if match := _IGNORE_COMMENT.match(comment):
            names = {name.strip() for name in match["rules"].split("--")[0].split(",")}
            rules |= {name for name in names if name} or {"*"}
    return rules
