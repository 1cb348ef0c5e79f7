"""A database's schema as deterministic SQL text, read from the catalog.

``verify`` compares two of these to tell whether a down file restored the schema,
and ``dump-schema`` writes one so that a pull request shows what a migration
changed. Catalog queries rather than ``pg_dump``: no binary of the server's own
major version is needed, and the text is the same on every server of one major
version. Everything is sorted by name (never by OID or creation order) and every
name is schema-qualified (the description runs with an empty search_path), so two
databases with the same schema give byte-identical text.

Described: extensions (with versions), schemas, types (enums, domains, composites,
ranges), sequences, tables (columns, types, defaults, NOT NULL, identity and
generated columns, partitioning, row-level security), constraints, indexes, views and
materialized views, functions, procedures and aggregates, triggers, policies and
comments. Left out: owners, privileges, data, objects that belong to an extension,
plpgsql (in every database), and the ledger ``schema_migrations``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import asyncpg

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.ledger import LEDGER_TABLE
from natlangchain_migrate.repeatables_ledger import REPEATABLES_TABLE
from natlangchain_migrate.sqltext import standard_literal as _literal

HEADER = (
    "-- Schema as described by natlangchain-migrate dump-schema: in dependency order, by\n"
    "-- name within it, with no owners, privileges or data. It applies to an empty database\n"
    "-- in one transaction: as a baseline file, or psql --single-transaction -f FILE.\n"
    "SET LOCAL check_function_bodies = false;\n"
)

# Schemas of the system, never described.
_USER_NAMESPACE = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"
)


def _not_from_extension(catalog: str, oid: str) -> str:
    """SQL: the object is not a member of an extension (its own dump covers it)."""
    return (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = "
        f"'{catalog}'::regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )


def _comment(kind: str, name: str, text: str | None) -> list[str]:
    return [] if text is None else [f"COMMENT ON {kind} {name} IS {_literal(text)};"]


async def describe_schema(conn: asyncpg.Connection, *, ledger_schema: str = "public") -> str:
    """The schema of the connected database as deterministic SQL text.

    Runs in a read-only transaction with an empty search_path, so that the catalog's
    own deparsing functions qualify every name the same way whatever the session's.
    The sections come in the order an empty database can create them in: schemas,
    extensions, types, sequences, functions (bodies unchecked), tables (a partition or
    child after its parent), sequence ownership, the functions that use a table's row
    type or body, views (each after those it reads), constraints, indexes, foreign keys,
    triggers, policies.
    """
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL search_path = ''")
        sequences, owned_by = await _sequences(conn)
        functions = await _functions(conn)
        sections = [
            await _schemas(conn),
            await _extensions(conn),
            await _types(conn),
            sequences,
            [block for late, block in functions if not late],
            await _tables(conn, ledger_schema),
            owned_by,
            [block for late, block in functions if late],
            await _views(conn),
            await _constraints(conn, ledger_schema, foreign=False),
            await _indexes(conn, ledger_schema),
            await _constraints(conn, ledger_schema, foreign=True),
            await _triggers(conn),
            await _policies(conn),
        ]
    blocks = [block for section in sections for block in section]
    return HEADER + "".join("\n" + block + "\n" for block in blocks)


def _sorted_blocks(keyed: Iterable[tuple[tuple[str, ...], str]]) -> list[str]:
    return [block for _, block in sorted(keyed)]


async def _extensions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT e.extname, quote_ident(e.extname) AS name, quote_ident(n.nspname) AS schema, "
        " e.extversion FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'"
    )
    return _sorted_blocks(
        (
            (r["extname"],),
            f"CREATE EXTENSION IF NOT EXISTS {r['name']} "
            f"WITH SCHEMA {r['schema']} VERSION {_literal(r['extversion'])};",
        )
        for r in rows
    )


async def _schemas(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT n.nspname, quote_ident(n.nspname) AS name, "
        "obj_description(n.oid, 'pg_namespace') AS comment FROM pg_namespace n "
        f"WHERE {_USER_NAMESPACE} AND {_not_from_extension('pg_namespace', 'n.oid')}"
    )
    return _sorted_blocks(
        (
            (r["nspname"],),
            "\n".join(
                [
                    f"CREATE SCHEMA IF NOT EXISTS {r['name']};",
                    *_comment("SCHEMA", r["name"], r["comment"]),
                ]
            ),
        )
        for r in rows
    )


async def _types(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT n.nspname, t.typname, t.typtype::text, format_type(t.oid, NULL) AS name, "
        " format_type(t.typbasetype, t.typtypmod) AS base, t.typnotnull, t.typdefault, "
        " obj_description(t.oid, 'pg_type') AS comment, "
        " ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid "
        "       ORDER BY e.enumsortorder) AS labels, "
        " ARRAY(SELECT quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) "
        "       FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 "
        "       AND NOT a.attisdropped ORDER BY a.attnum) AS attributes, "
        " ARRAY(SELECT 'CONSTRAINT ' || quote_ident(c.conname) || ' ' "
        "       || pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "       WHERE c.contypid = t.oid AND c.contype <> 'n' ORDER BY c.conname COLLATE \"C\") "
        "   AS checks, "
        " (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid) "
        "   AS subtype "
        "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        f"WHERE {_USER_NAMESPACE} AND {_not_from_extension('pg_type', 't.oid')} "
        "AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND "
        "     (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))"
    )
    keyed = []
    for r in rows:
        name = r["name"]
        if r["typtype"] == "e":
            labels = ", ".join(_literal(label) for label in r["labels"])
            text = f"CREATE TYPE {name} AS ENUM ({labels});"
        elif r["typtype"] == "d":
            parts = [f"CREATE DOMAIN {name} AS {r['base']}"]
            if r["typdefault"] is not None:
                parts.append(f"DEFAULT {r['typdefault']}")
            if r["typnotnull"]:
                parts.append("NOT NULL")
            parts += list(r["checks"])
            text = " ".join(parts) + ";"
        elif r["typtype"] == "r":
            text = f"CREATE TYPE {name} AS RANGE (SUBTYPE = {r['subtype']});"
        else:
            attributes = ",\n".join(f"    {a}" for a in r["attributes"])
            text = f"CREATE TYPE {name} AS (\n{attributes}\n);"
        lines = [text, *_comment("TYPE", name, r["comment"])]
        keyed.append(((r["nspname"], r["typname"]), "\n".join(lines)))
    return _sorted_blocks(keyed)


async def _sequences(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """Sequences, except those of identity columns (the column's definition says it), and
    apart, which column owns each (said once the tables exist)."""
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, c.oid::regclass::text AS name, "
        " format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement, s.seqmin, "
        " s.seqmax, s.seqcache, s.seqcycle, obj_description(c.oid, 'pg_class') AS comment, "
        " (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname) "
        "  FROM pg_depend d JOIN pg_attribute a "
        "    ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
        "    AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a') AS owned_by "
        "FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind = 'S' AND {_USER_NAMESPACE} "
        f"AND {_not_from_extension('pg_class', 'c.oid')} "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "  AND d.objid = c.oid AND d.deptype = 'i')"
    )
    keyed = []
    owned = []
    for r in rows:
        lines = [
            f"CREATE SEQUENCE {r['name']} AS {r['type']} START WITH {r['seqstart']} "
            f"INCREMENT BY {r['seqincrement']} MINVALUE {r['seqmin']} MAXVALUE {r['seqmax']} "
            f"CACHE {r['seqcache']}{' CYCLE' if r['seqcycle'] else ''};"
        ]
        lines += _comment("SEQUENCE", r["name"], r["comment"])
        keyed.append(((r["nspname"], r["relname"]), "\n".join(lines)))
        if r["owned_by"]:  # after the tables: the column must exist
            block = f"ALTER SEQUENCE {r['name']} OWNED BY {r['owned_by']};"
            owned.append(((r["nspname"], r["relname"]), block))
    return _sorted_blocks(keyed), _sorted_blocks(owned)


def _relation_filter(relkinds: str, ledger_schema: str | None = None) -> str:
    """SQL: relations ``c`` of these kinds in user schemas, not the ledger, not an
    extension's."""
    ledger = ""
    if ledger_schema is not None:
        ledger = (
            f" AND NOT (n.nspname = {_literal(ledger_schema)} "
            f"AND c.relname IN ({_literal(LEDGER_TABLE)}, {_literal(REPEATABLES_TABLE)}))"
        )
    return (
        f"c.relkind = ANY('{{{relkinds}}}'::char[]) AND {_USER_NAMESPACE} "
        f"AND {_not_from_extension('pg_class', 'c.oid')}{ledger}"
    )


async def _tables(conn: asyncpg.Connection, ledger_schema: str) -> list[str]:
    tables = await conn.fetch(
        "SELECT c.oid, n.nspname, c.relname, c.oid::regclass::text AS name, "
        " c.relpersistence::text, c.reloptions, c.relrowsecurity, c.relforcerowsecurity, "
        " obj_description(c.oid, 'pg_class') AS comment, "
        " CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key, "
        " CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS bound, "
        " ARRAY(SELECT i.inhparent::regclass::text FROM pg_inherits i "
        "       WHERE i.inhrelid = c.oid ORDER BY i.inhseqno) AS parents "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_relation_filter('r,p', ledger_schema)}"
    )
    columns = await _columns(conn, [t["oid"] for t in tables])
    keyed = []
    for t in tables:
        name = t["name"]
        kind = "UNLOGGED TABLE" if t["relpersistence"] == "u" else "TABLE"
        body = ",\n".join(f"    {definition}" for definition, _ in columns.get(t["oid"], []))
        text = f"CREATE {kind} {name} (\n{body}\n)" if body else f"CREATE {kind} {name} ()"
        if t["parents"] and t["bound"] is None:
            text += f" INHERITS ({', '.join(t['parents'])})"
        if t["partition_key"]:
            text += f" PARTITION BY {t['partition_key']}"
        if t["reloptions"]:
            text += f" WITH ({', '.join(sorted(t['reloptions']))})"
        lines = [text + ";"]
        if t["bound"] is not None:
            lines.append(
                f"ALTER TABLE ONLY {t['parents'][0]} ATTACH PARTITION {name} {t['bound']};"
            )
        if t["relrowsecurity"]:
            lines.append(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")
        if t["relforcerowsecurity"]:
            lines.append(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")
        lines += _comment("TABLE", name, t["comment"])
        for definition, comment in columns.get(t["oid"], []):
            column = f"{name}.{definition.split(' ', 1)[0]}"
            lines += _comment("COLUMN", column, comment)
        keyed.append(((t["nspname"], t["relname"]), "\n".join(lines), t["name"], t["parents"]))
    return _parents_first(keyed)


def _parents_first(keyed: Sequence[tuple[tuple[str, ...], str, str, list[str]]]) -> list[str]:
    """Blocks by name, each moved after the blocks (by qualified name) it needs."""
    blocks = {name: (key, block, needs) for key, block, name, needs in keyed}
    done: set[str] = set()
    ordered: list[str] = []

    def place(name: str, seen: frozenset[str]) -> None:
        if name in done or name in seen or name not in blocks:
            return
        _, block, needs = blocks[name]
        for need in sorted(needs):
            place(need, seen | {name})
        done.add(name)
        ordered.append(block)

    for name in sorted(blocks, key=lambda n: blocks[n][0]):
        place(name, frozenset())
    return ordered


async def _columns(
    conn: asyncpg.Connection, relations: list[int]
) -> dict[int, list[tuple[str, str | None]]]:
    """Each relation's columns in their order: a definition and a comment."""
    rows = await conn.fetch(
        "SELECT a.attrelid, quote_ident(a.attname) AS name, "
        " format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, "
        " CASE a.attidentity WHEN 'a' THEN 'ALWAYS' WHEN 'd' THEN 'BY DEFAULT' END AS identity, "
        " CASE a.attgenerated WHEN 's' THEN 'STORED' WHEN 'v' THEN 'VIRTUAL' END AS generated, "
        " pg_get_expr(d.adbin, d.adrelid) AS default_expr, "
        " CASE WHEN a.attcollation <> t.typcollation "
        "      THEN a.attcollation::regcollation::text END AS collation, "
        " col_description(a.attrelid, a.attnum) AS comment "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attrelid, a.attnum",
        relations,
    )
    columns: dict[int, list[tuple[str, str | None]]] = {}
    for r in rows:
        parts = [r["name"], r["type"]]
        if r["collation"]:
            parts.append(f"COLLATE {r['collation']}")
        if r["generated"]:
            parts.append(f"GENERATED ALWAYS AS ({r['default_expr']}) {r['generated']}")
        elif r["default_expr"] is not None:
            parts.append(f"DEFAULT {r['default_expr']}")
        if r["identity"]:
            parts.append(f"GENERATED {r['identity']} AS IDENTITY")
        if r["attnotnull"]:
            parts.append("NOT NULL")
        columns.setdefault(r["attrelid"], []).append((" ".join(parts), r["comment"]))
    return columns


async def _views(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.oid, n.nspname, c.relname, c.oid::regclass::text AS name, c.relkind::text, "
        " c.reloptions, pg_get_viewdef(c.oid) AS query, "
        " obj_description(c.oid, 'pg_class') AS comment, "
        " ARRAY(SELECT DISTINCT d.refobjid::regclass::text FROM pg_rewrite w "
        "       JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid "
        "       WHERE w.ev_class = c.oid AND d.refclassid = 'pg_class'::regclass "
        "       AND d.refobjid <> c.oid) AS reads "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_relation_filter('v,m')}"
    )
    columns = await _columns(conn, [r["oid"] for r in rows])
    keyed = []
    for r in rows:
        kind = "MATERIALIZED VIEW" if r["relkind"] == "m" else "VIEW"
        options = f" WITH ({', '.join(sorted(r['reloptions']))})" if r["reloptions"] else ""
        query = r["query"].rstrip().rstrip(";")
        lines = [f"CREATE {kind} {r['name']}{options} AS\n{query};"]
        lines += _comment(kind, r["name"], r["comment"])
        for definition, comment in columns.get(r["oid"], []):
            lines += _comment("COLUMN", f"{r['name']}.{definition.split(' ', 1)[0]}", comment)
        keyed.append(((r["nspname"], r["relname"]), "\n".join(lines), r["name"], r["reads"]))
    return _parents_first(keyed)


async def _constraints(conn: asyncpg.Connection, ledger_schema: str, *, foreign: bool) -> list[str]:
    """Table constraints: the foreign keys (``foreign``) or the others; the foreign keys
    go after the indexes, as the unique index one may reference must exist. NOT NULL is
    said on the column (PostgreSQL 18 also lists it here)."""
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, k.conname, k.contype::text, c.oid::regclass::text AS name, "
        " quote_ident(k.conname) AS constraint_name, pg_get_constraintdef(k.oid) AS definition, "
        " obj_description(k.oid, 'pg_constraint') AS comment "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE k.contype <> 'n' AND (k.contype = 'f') = {'true' if foreign else 'false'} "
        f"AND {_relation_filter('r,p', ledger_schema)}"
    )
    keyed = []
    for r in rows:
        on = f"{r['constraint_name']} ON {r['name']}"
        lines = [
            f"ALTER TABLE ONLY {r['name']} ADD CONSTRAINT {r['constraint_name']} "
            f"{r['definition']};",
            *_comment("CONSTRAINT", on, r["comment"]),
        ]
        keyed.append(((r["nspname"], r["relname"], r["conname"]), "\n".join(lines)))
    return _sorted_blocks(keyed)


async def _indexes(conn: asyncpg.Connection, ledger_schema: str) -> list[str]:
    """Indexes other than those a constraint owns (its definition already says them)."""
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, x.relname AS index, i.indisvalid, "
        " pg_get_indexdef(i.indexrelid) AS definition, "
        " obj_description(x.oid, 'pg_class') AS comment, x.oid::regclass::text AS name "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_class x ON x.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_relation_filter('r,p,m', ledger_schema)} "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid "
        "  AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))"
    )
    keyed = []
    for r in rows:
        invalid = "" if r["indisvalid"] else "  -- INVALID: a failed concurrent build"
        lines = [f"{r['definition']};{invalid}", *_comment("INDEX", r["name"], r["comment"])]
        keyed.append(((r["nspname"], r["relname"], r["index"]), "\n".join(lines)))
    return _sorted_blocks(keyed)


async def _functions(conn: asyncpg.Connection) -> list[tuple[bool, str]]:
    """Functions, procedures and aggregates by name, each with whether it must wait for
    the tables."""
    rows = await conn.fetch(
        "SELECT n.nspname, p.proname, p.prokind::text, "
        " pg_get_function_identity_arguments(p.oid) AS arguments, "
        " quote_ident(n.nspname) || '.' || quote_ident(p.proname) AS name, "
        " CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END AS definition, "
        " obj_description(p.oid, 'pg_proc') AS comment, "
        " a.aggtransfn::regproc::text AS transition, format_type(a.aggtranstype, NULL) "
        "   AS state_type, NULLIF(a.aggfinalfn, 0)::regproc::text AS final, a.agginitval, "
        # After the tables: a function whose signature uses a table's row type, or whose
        # SQL-standard body (BEGIN ATOMIC) names a relation.
        " EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
        "   AND d.objid = p.oid AND (d.refclassid = 'pg_class'::regclass "
        "   OR (d.refclassid = 'pg_type'::regclass AND EXISTS (SELECT 1 FROM pg_type t "
        "       JOIN pg_class r ON r.oid = t.typrelid WHERE t.oid = d.refobjid "
        "       AND r.relkind <> 'c')))) AS late "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid "
        f"WHERE {_USER_NAMESPACE} AND {_not_from_extension('pg_proc', 'p.oid')} "
        # A range type's own constructors come and go with it.
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
        "  AND d.objid = p.oid AND d.deptype = 'i')"
    )
    keyed = []
    for r in rows:
        signature = f"{r['name']}({r['arguments']})"
        if r["prokind"] == "a":
            options = [f"SFUNC = {r['transition']}", f"STYPE = {r['state_type']}"]
            if r["final"]:
                options.append(f"FINALFUNC = {r['final']}")
            if r["agginitval"] is not None:
                options.append(f"INITCOND = {_literal(r['agginitval'])}")
            text = f"CREATE AGGREGATE {signature} ({', '.join(options)});"
            kind = "AGGREGATE"
        else:
            text = r["definition"].rstrip() + ";"
            kind = "PROCEDURE" if r["prokind"] == "p" else "FUNCTION"
        lines = [text, *_comment(kind, signature, r["comment"])]
        keyed.append(((r["nspname"], r["proname"], r["arguments"]), r["late"], "\n".join(lines)))
    return [(late, block) for _, late, block in sorted(keyed)]


async def _triggers(conn: asyncpg.Connection) -> list[str]:
    """User triggers; a partition's clones of its parent's trigger are the parent's."""
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid) AS definition, "
        " quote_ident(g.tgname) || ' ON ' || c.oid::regclass::text AS name, "
        " obj_description(g.oid, 'pg_trigger') AS comment "
        "FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE NOT g.tgisinternal AND g.tgparentid = 0 AND {_relation_filter('r,p,v,f')}"
    )
    return _sorted_blocks(
        (
            (r["nspname"], r["relname"], r["tgname"]),
            "\n".join([r["definition"] + ";", *_comment("TRIGGER", r["name"], r["comment"])]),
        )
        for r in rows
    )


async def _policies(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, p.polname, c.oid::regclass::text AS table_name, "
        " quote_ident(p.polname) AS name, p.polpermissive, p.polcmd::text, "
        " ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(r::regrole::text) END "
        "       FROM unnest(p.polroles) AS r ORDER BY 1) AS roles, "
        " pg_get_expr(p.polqual, p.polrelid) AS using_expr, "
        " pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr "
        "FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NAMESPACE}"
    )
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    keyed = []
    for r in rows:
        text = (
            f"CREATE POLICY {r['name']} ON {r['table_name']} AS "
            f"{'PERMISSIVE' if r['polpermissive'] else 'RESTRICTIVE'} "
            f"FOR {commands[r['polcmd']]} TO {', '.join(r['roles'])}"
        )
        if r["using_expr"] is not None:
            text += f" USING ({r['using_expr']})"
        if r["check_expr"] is not None:
            text += f" WITH CHECK ({r['check_expr']})"
        keyed.append(((r["nspname"], r["relname"], r["polname"]), text + ";"))
    return _sorted_blocks(keyed)


async def dump_schema(dsn: str, *, schema: str = "public", wait: float = 0.0) -> str:
    """The schema of the database at ``dsn`` (``schema``: where the ledger lives)."""
    from natlangchain_migrate.connection import connect

    conn = await connect(dsn, wait=wait)
    try:
        return await describe_schema(conn, ledger_schema=schema)
    finally:
        await conn.close()


def unwritable_folder(path: Path) -> str | None:
    """Why the schema cannot be written to ``path`` (checked before a run), or None."""
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist"
    if path.is_dir():
        return "is a directory; give a file path, such as schema.sql"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"the folder {path.parent} is not writable"
    return None


def write_schema(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, renamed
    over the old one (which readers holding it keep intact)."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise ConfigurationError(
            f"could not write the schema to {path} ({error.strerror or error}); give a path "
            "in a writable folder"
        ) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigurationError(
            f"could not write the schema to {path} ({error.strerror or error})"
        ) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
