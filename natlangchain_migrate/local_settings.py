"""What a file sets for itself (``SET LOCAL``, ``SET``, ``set_config``) in transaction lock
mode, where every file runs in the lock's one transaction: noted as the file starts and
put back as it ends, so that each file runs as it would in a transaction of its own. A
savepoint would not do: RELEASE keeps a SET LOCAL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from natlangchain_migrate.sqltext import standard_literal

# Where a file's settings are kept while it runs in the lock's one transaction.
_BEFORE_FILE = "natlangchain_migrate.before_file"
# The settings a file can change with SET LOCAL: not the transaction's own modes, which
# cannot be put back once it has run a query, nor the runner's note of them.
_CHANGEABLE = (
    "{s}context IN ('user', 'superuser') AND NOT pg_catalog.starts_with({s}name, "
    "'natlangchain_migrate.') AND {s}name NOT IN "
    "('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')"
)
# A made-up setting (app.x) a file sets: pg_settings does not list those.
_CUSTOM_SETTING = re.compile(
    r"\b(?:SET(?:\s+LOCAL|\s+SESSION)?|RESET)\s+([a-z_][\w$]*\.[a-z_][\w$]*)"
    r"|\bset_config\s*\(\s*'([a-z_][\w$]*\.[a-z_][\w$]*)'",
    re.IGNORECASE,
)


# What may change a setting: a statement that starts with SET or RESET, SET LOCAL, SESSION
# or ROLE anywhere (an EXECUTE'd string), set_config, DISCARD. A file with none of them
# skips the note and the restore (two reads of pg_settings, about 1 ms each); what a
# function it calls sets with set_config(..., true) is not seen.
_MAY_SET = re.compile(
    r"(?:^|;)\s*(?:SET|RESET)\b|\bSET\s+(?:LOCAL|SESSION|ROLE)\b|\bset_config\b|\bDISCARD\b",
    re.IGNORECASE | re.MULTILINE,
)


def may_set(sql: str) -> bool:
    """Whether ``sql`` may change a setting for the rest of its transaction."""
    return _MAY_SET.search(sql) is not None


def custom_settings(sql: str) -> set[str]:
    """The made-up settings (a dot in the name: ``app.x``) that ``sql`` may set."""
    return {name.lower() for pair in _CUSTOM_SETTING.findall(sql) for name in pair if name}


def settings_kept_sql() -> str:
    """SQL that notes, in the lock's one transaction (transaction lock mode), every
    setting (and the role: ``SET LOCAL ROLE``) as a file starts, for
    ``settings_restored_sql`` to put back when it ends."""
    return (
        f"SELECT pg_catalog.set_config('{_BEFORE_FILE}', ((SELECT "
        "pg_catalog.jsonb_object_agg(name, setting) FROM pg_catalog.pg_settings "
        f"WHERE {_CHANGEABLE.format(s='')}) || pg_catalog.jsonb_build_object('role', "
        "pg_catalog.current_setting('role')))::text, true);\n"
    )


def settings_noted_sql(custom: Iterable[str]) -> str:
    """SQL that adds to that note the made-up settings in ``custom`` not noted yet (before
    the SQL that may set them runs); empty when there are none."""
    pairs = ", ".join(
        f"{standard_literal(n)}, pg_catalog.current_setting({standard_literal(n)}, true)"
        for n in sorted(custom)
    )
    if not pairs:
        return ""
    kept = f"pg_catalog.current_setting('{_BEFORE_FILE}')::pg_catalog.jsonb"
    return (
        f"SELECT pg_catalog.set_config('{_BEFORE_FILE}', "
        f"(pg_catalog.jsonb_build_object({pairs}) || {kept})::text, true);\n"
    )


def settings_restored_sql(settings: str, custom: Iterable[str]) -> str:
    """SQL that ends a file's SET LOCAL (or SET) inside the lock's one transaction, so the
    next file runs as it would alone: what the file changed goes back to what
    ``settings_kept_sql`` noted, a setting it made up (``app.x``) to what it was, or
    empty, as after a commit. A savepoint would not do: RELEASE keeps SET LOCAL.
    ``settings`` (the runner's SET LOCAL for the file) goes first, so a file's
    statement_timeout of 1ms or search_path does not reach this statement."""
    kept = f"pg_catalog.current_setting('{_BEFORE_FILE}')::pg_catalog.jsonb"
    restore = (
        # The role first (pg_settings does not list it), so the rest runs as the runner.
        f"{settings}SELECT pg_catalog.set_config('role', k ->> 'role', true) FROM (SELECT "
        f"{kept} AS k) r WHERE pg_catalog.current_setting('role') IS DISTINCT FROM "
        "k ->> 'role';\n"
        "SELECT pg_catalog.count(pg_catalog.set_config(s.name, "
        "COALESCE(b.value, s.reset_val), true)) FROM pg_catalog.pg_settings s "
        f"LEFT JOIN pg_catalog.jsonb_each_text({kept}) b ON b.key = s.name "
        f"WHERE {_CHANGEABLE.format(s='s.')} AND s.setting IS DISTINCT FROM b.value;\n"
    )
    names = ", ".join(standard_literal(name) for name in sorted(custom))
    if names:
        restore += (
            f"SELECT pg_catalog.count(pg_catalog.set_config(n, COALESCE({kept} ->> n, ''), "
            f"true)) FROM pg_catalog.unnest(ARRAY[{names}]::text[]) n;\n"
        )
    return restore


def around(settings: str, sql: str) -> tuple[str, str]:
    """What to send before ``sql`` (``settings``, the runner's SET LOCAL for it, and the
    note) and after it (the restore); the settings alone and nothing after for SQL that
    cannot set anything."""
    if not may_set(sql):
        return settings, ""
    custom = custom_settings(sql)
    prefix = settings + settings_kept_sql() + settings_noted_sql(custom)
    return prefix, settings_restored_sql(settings, custom)
