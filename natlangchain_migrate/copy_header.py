"""The table, columns and options of a ``COPY ... FROM stdin`` data section, as asyncpg's
``copy_to_table`` takes them.

pg_dump writes one form, ``COPY [schema.]table (columns) FROM stdin;``, with plain or
double-quoted names: that form is read here with one regular expression, because pglast's
parse tree costs a run 0.1-0.2 s of imports (its ``ast`` module) for a statement of one
line. Anything else (options, a WHERE clause, a query, comments inside, a keyword or a
non-ASCII letter in an unquoted name, a name longer than PostgreSQL keeps) goes to pglast,
which parses it as the server would and refuses what a data section cannot run.
"""

from __future__ import annotations

import re
from typing import Any

from natlangchain_migrate.errors import ConfigurationError

# PostgreSQL's reserved and type/function-name keywords (pglast.keywords, checked by
# tests/test_copy_header.py): not a table or column name unless quoted.
# fmt: off
_NOT_NAMES = frozenset({
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
    "authorization", "binary", "both", "case", "cast", "check", "collate", "collation",
    "column", "concurrently", "constraint", "create", "cross", "current_catalog",
    "current_date", "current_role", "current_schema", "current_time", "current_timestamp",
    "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end",
    "except", "false", "fetch", "for", "foreign", "freeze", "from", "full", "grant",
    "group", "having", "ilike", "in", "initially", "inner", "intersect", "into", "is",
    "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime",
    "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or",
    "order", "outer", "overlaps", "placing", "primary", "references", "returning", "right",
    "select", "session_user", "similar", "some", "symmetric", "system_user", "table",
    "tablesample", "then", "to", "trailing", "true", "union", "unique", "user", "using",
    "variadic", "verbose", "when", "where", "window", "with",
})
# fmt: on
_MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: a longer name is cut by the server (pglast decides)

_NAME = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_SIMPLE = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|\Z))*"  # pg_dump's comment lines before it
    rf"copy\s+({_NAME})(?:\s*\.\s*({_NAME}))?"
    rf"(?:\s*\(\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*\))?"
    r"\s+from\s+stdin\s*;?\s*",
    re.I | re.A,  # ASCII: \s is what PostgreSQL calls white space
)
_NAMES = re.compile(_NAME)

# COPY options asyncpg's copy_to_table takes, by PostgreSQL's name.
_STRING_OPTIONS = ("format", "delimiter", "null", "quote", "escape", "encoding")
_BOOLEAN_OPTIONS = ("header", "freeze")
_LIST_OPTIONS = ("force_not_null", "force_null")


def copy_arguments(statement: str, where: str) -> dict[str, Any]:
    """The table, columns and options of a ``COPY ... FROM stdin`` as copy_to_table's
    keywords (its text is only a statement: no data is parsed); ``where`` (file:line)
    names it in a refusal."""
    return _plain(statement) or _parsed(statement, where)


def _plain(statement: str) -> dict[str, Any] | None:
    """pg_dump's form, or None for anything else."""
    found = _SIMPLE.fullmatch(statement)
    if found is None:
        return None
    first, second, listed = found.groups()
    names = [first] + ([second] if second else []) + _NAMES.findall(listed or "")
    folded = [_name(name) for name in names]
    if any(name is None for name in folded):
        return None
    arguments: dict[str, Any] = {}
    if second:
        arguments["schema_name"], arguments["table_name"] = folded[0], folded[1]
    else:
        arguments["table_name"] = folded[0]
    if listed:
        arguments["columns"] = folded[2 if second else 1 :]
    return arguments


def _name(written: str) -> str | None:
    """The name as the server reads it (unquoted: lower case), or None when only the
    parser can say (a keyword, a name the server would cut)."""
    if written.startswith('"'):
        name = written[1:-1].replace('""', '"')
    elif written.lower() in _NOT_NAMES:
        return None
    else:
        name = written.lower()
    return name if len(name.encode("utf-8")) <= _MAX_NAME_BYTES else None


def _parsed(statement: str, where: str) -> dict[str, Any]:
    """Any other COPY ... FROM stdin, read from pglast's parse tree."""
    # Imported here: pglast's import is 0.1-0.2 s that pg_dump's form never needs.
    import json

    from pglast.parser import ParseError, parse_sql_json

    try:
        (raw,) = json.loads(parse_sql_json(statement))["stmts"]
    except (ParseError, ValueError):
        raise ConfigurationError(
            f"{where}: this COPY ... FROM stdin does not parse as one statement; fix it"
        ) from None
    node = raw["stmt"].get("CopyStmt", {})
    if not node.get("relation") or node.get("whereClause") or node.get("query"):
        raise ConfigurationError(
            f"{where}: a COPY data section loads a table (COPY table [(columns)] FROM stdin "
            "[options]); a WHERE clause or a query is not supported: load into the table, "
            "then fix the rows with SQL"
        )
    relation = node["relation"]
    arguments: dict[str, Any] = {"table_name": relation["relname"]}
    if relation.get("schemaname"):
        arguments["schema_name"] = relation["schemaname"]
    if node.get("attlist"):
        arguments["columns"] = [item["String"]["sval"] for item in node["attlist"]]
    for option in node.get("options") or ():
        element = option["DefElem"]
        name, value = element["defname"], element.get("arg")
        if name in _STRING_OPTIONS:
            arguments[name] = _string(value)
        elif name in _BOOLEAN_OPTIONS:
            arguments[name] = _boolean(value)
        elif name in _LIST_OPTIONS:
            items = (value or {}).get("List", {}).get("items", [])
            arguments[name] = [item["String"]["sval"] for item in items] if items else True
        else:
            raise ConfigurationError(
                f"{where}: COPY option {name} is not supported in a data section; remove it"
            )
    return arguments


def _string(value: dict[str, Any] | None) -> str:
    inner: dict[str, Any] = next(iter((value or {}).values()), {})
    return str(inner.get("sval", ""))


def _boolean(value: dict[str, Any] | None) -> bool:
    if value is None:
        return True
    if "Boolean" in value:
        return bool(value["Boolean"].get("boolval", False))
    if "Integer" in value:
        return bool(value["Integer"].get("ival", 0))
    return _string(value).lower() in ("true", "on", "1", "yes")
