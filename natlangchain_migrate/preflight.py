"""Checks that refuse a run before anything is written, each naming what to change.

``check_options`` needs only the files; ``check_before_apply`` runs once the
plan says there is work to do, so an up-to-date start-up pays for none of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import asyncpg

from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.durations import check_duration
from natlangchain_migrate.errors import (
    ConfigurationError,
    PrerequisiteError,
    ReadOnlyDatabaseError,
    TransactionControlError,
)
from natlangchain_migrate.layouts import OPENS_NO_TRANSACTION
from natlangchain_migrate.ledger import LedgerSnapshot
from natlangchain_migrate.manifest import ManifestEntry
from natlangchain_migrate.plan import MigrationPlan
from natlangchain_migrate.settings import CallArguments, RunnerOptions

_INSTALL_HINTS = {
    "vector": (
        "install pgvector on the server (Debian/Ubuntu: apt install postgresql-<major>-pgvector; "
        "Docker: the pgvector/pgvector image; see github.com/pgvector/pgvector)"
    ),
}


def _is_baseline(version: int, options: RunnerOptions) -> bool:
    """Whether a baseline file has this version (a target of its own, when the history
    below it is squashed)."""
    from natlangchain_migrate.baseline_files import load_baselines

    return any(b.version == version for b in load_baselines(options.migrations_dir))


def check_options(
    migrations: Sequence[Migration] | Sequence[ManifestEntry],
    options: RunnerOptions,
    call: CallArguments | None = None,
) -> None:
    """Versions named by --version/--skip exist, durations and numbers make sense."""
    execution = options.execution
    check_duration("--pg-lock-timeout", execution.pg_lock_timeout, "pg_lock_timeout=")
    for flag, keyword, value in (
        ("--lock-timeout", "lock_timeout=", options.lock.wait),
        ("--wait", "wait=", options.connect_wait),
        ("--lock-retries", "lock_retries=", execution.lock_retries),
        ("(retry delay)", "retry_delay=", execution.retry_delay),
        ("(progress interval)", "progress_interval=", execution.progress_interval),
    ):
        # nan compares false with everything: "not value >= 0" refuses it too.
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigurationError(
                f"{flag} {value!r} must be a finite number of seconds (or count), 0 or more "
                f"(in the library: {keyword})"
            )
    check_duration("--statement-timeout", execution.statement_timeout, "statement_timeout=")
    call = call or CallArguments()
    known = {m.version for m in migrations if m.version is not None}
    listed = ", ".join(str(v) for v in sorted(known)) or "none"
    target = call.target_version
    if target is not None and target not in known and not _is_baseline(target, options):
        raise ConfigurationError(
            f"--version {target} matches no migration file; known versions: {listed} "
            "(in the library: target=)"
        )
    unknown = sorted(call.skip - known)
    if unknown:
        raise ConfigurationError(
            f"--skip {unknown[0]} matches no migration file; known versions: {listed} "
            "(in the library: skip=)"
        )


async def check_before_apply(
    conn: asyncpg.Connection,
    plan: MigrationPlan,
    snapshot: LedgerSnapshot,
    options: RunnerOptions,
) -> None:
    """Standby, lock mode, transaction control and extensions, before the lock is taken."""
    if snapshot.standby:
        raise ReadOnlyDatabaseError(
            "the database is a read-only standby (pg_is_in_recovery() is true); point "
            "--database-url or DATABASE_URL at the primary (dsn= in the library)"
        )
    check_pending_files(plan.pending, options)
    await _check_extensions(conn, plan.pending)


def check_pending_files(pending: Sequence[Migration], options: RunnerOptions) -> None:
    """What the pending files alone refuse (lock mode, backfill settings, a baseline file
    of another schema, client-only commands, transaction control): a ``--dry-run`` runs
    these too, so it reports the refusal the run would give."""
    _check_lock_mode(pending, options)
    from natlangchain_migrate.baseline_files import refuse_other_schema

    refuse_other_schema(pending, options.schema)
    check_client_only(pending)
    check_transaction_control(pending)


def _check_lock_mode(pending: Sequence[Migration], options: RunnerOptions) -> None:
    _check_backfills(pending, options)
    if not options.transaction_pooling:
        return
    for migration in pending:
        if migration.directives.no_transaction:
            raise ConfigurationError(
                f"{migration.filename} runs without a transaction, which cannot work through "
                "PgBouncer's transaction pooling (--lock-mode transaction); run it with "
                "--lock-mode session against the server directly"
            )


def _check_backfills(pending: Sequence[Migration], options: RunnerOptions) -> None:
    """A backfill's settings are read before anything runs; it needs its own short
    transactions, so not inside the lock's one (PgBouncer) nor as a no-transaction file."""
    backfills = [migration for migration in pending if migration.directives.backfill]
    if not backfills:
        return
    # Imported here: a run without a backfill does not need its module (and its own).
    from natlangchain_migrate import backfill

    for migration in backfills:
        backfill.parse(migration)
        if options.transaction_pooling or migration.directives.no_transaction:
            raise ConfigurationError(
                f"{migration.filename} is a backfill, which commits one short transaction per "
                "batch: it cannot run inside --lock-mode transaction's single transaction, nor "
                "as a no-transaction file; run it with --lock-mode session and drop "
                "no-transaction"
            )


def check_client_only(migrations: Sequence[Migration]) -> None:
    """Refuse, before anything runs, what only psql can run: a COPY ... FROM STDIN (the
    server would wait for its rows forever, holding the lock) or a psql meta-command."""
    from natlangchain_migrate.statements import find_client_only

    for migration in migrations:
        found = find_client_only(migration.sql)
        if found is None:
            continue
        line, what = found
        where = f"{migration.filename}:{line}"
        if (
            what.startswith("COPY")
            and migration.directives.no_transaction
            and _has_rows(migration.sql)
        ):
            raise ConfigurationError(
                f"{where}: COPY ... FROM STDIN with its rows in the file: a migration sends "
                "them from the file only in a transactional file where they follow the COPY "
                "and end with a line holding only \\., and this one runs without a "
                "transaction; move the COPY and its rows into a transactional migration of "
                "their own, or write them as INSERT ... VALUES; nothing was run"
            )
        if what.startswith("COPY"):
            from natlangchain_migrate.filesum import unended_copy

            unended = unended_copy(migration.sql)
            if unended is not None and _rows_after(migration.sql, unended):
                raise ConfigurationError(
                    f"{migration.filename}:{unended}: this COPY ... FROM stdin's rows do not "
                    "end with a line holding only \\. before the end of the file: add that "
                    "line after its last row (as pg_dump writes it); nothing was run"
                )
        if what.startswith("COPY"):
            raise ConfigurationError(
                f"{where}: COPY ... FROM STDIN reads its rows from the client: a migration "
                "sends them from the file only in a transactional file where they follow the "
                "COPY and end with a line holding only \\. (as pg_dump writes them); add "
                "them, or write the rows as INSERT ... VALUES; nothing was run"
            )
        raise ConfigurationError(
            f"{where}: {what} is a psql meta-command, which only psql understands (the "
            "server would see a syntax error): remove it; put \\set values into the SQL, "
            "make an \\i file a migration of its own, and delete pg_dump's "
            "\\restrict / \\unrestrict lines; nothing was run"
        )


def _rows_after(sql: str, line: int) -> bool:
    """Whether anything follows the COPY statement that starts on ``line`` (its rows,
    which psql reads from the line after the one ending in its ';')."""
    lines = sql.split("\n")[line - 1 :]
    ends = next((n for n, text in enumerate(lines) if text.rstrip().endswith(";")), None)
    return ends is not None and any(text.strip() for text in lines[ends + 1 :])


def _has_rows(sql: str) -> bool:
    """Whether a COPY's rows are in the file: a line holding only \\. ends them."""
    return any(line.strip() == "\\." for line in sql.splitlines())


def check_transaction_control(migrations: Sequence[Migration]) -> None:
    """Refuse a file that begins or commits by itself: the runner owns the transactions,
    one per transactional file, one per statement of a no-transaction file. A
    golang-migrate or prisma file wrapped whole in BEGIN; ... COMMIT; reaches here
    unwrapped (layout_migrations.py); the message says so in those layouts."""
    from natlangchain_migrate.statements import find_transaction_control, split_statements

    for migration in migrations:
        if migration.source is not None:  # streamed: sqlscan.py refuses it where it is met
            continue
        if migration.directives.no_transaction:
            # Parsed here too, so that a syntax error names file:line:column before
            # anything runs, not after the migrations before it were applied.
            split_statements(migration.filename, migration.sql)
        wrapped = migration.layout in OPENS_NO_TRANSACTION
        found = find_transaction_control(migration.sql, past_wrapper=wrapped)
        if found is None:
            continue
        line, keyword = found
        raise TransactionControlError(
            f"{migration.filename}:{line}: {keyword} inside a migration; "
            + (_begin_options_fix(migration, line) or _transaction_control_fix(migration, keyword))
        )


def _own_kind(filename: str) -> str | None:
    """What a file of this runner's own kind is called, whatever the folder's layout."""
    from natlangchain_migrate.discovery import is_baseline_file, is_repeatable_file

    name = filename.rpartition("/")[2]
    if is_baseline_file(name):
        return "a baseline file"
    return "a repeatable (R__) file" if is_repeatable_file(name) else None


def _begin_options_fix(migration: Migration, line: int) -> str | None:
    """For a wrapper whose BEGIN has options (BEGIN ISOLATION LEVEL SERIALIZABLE), in the
    layouts that accept a plain one: the runner's transaction takes the BEGIN's place, so
    the options go in a SET TRANSACTION, its body's first statement."""
    if migration.layout not in OPENS_NO_TRANSACTION or migration.directives.no_transaction:
        return None
    import re

    from natlangchain_migrate.statements import line_and_column, split_statements

    first = split_statements(migration.filename, migration.sql)[0]
    begin = re.match(
        r"(?:begin(?:\s+(?:work|transaction))?|start\s+transaction)\b\s*(.+?)[\s;]*$",
        first.text,
        flags=re.I | re.S,
    )
    if begin is None or first.wrapper or line_and_column(migration.sql, first.offset)[0] != line:
        return None
    options = " ".join(begin[1].split())
    return (
        f"only a plain BEGIN; wraps a whole {migration.layout} file (the runner's own "
        f"transaction takes its place, with the ledger row): write BEGIN; and put "
        f"SET TRANSACTION {options}; after it, as the body's first statement (not under "
        "--lock-mode transaction, where the lock's transaction has run queries already)"
    )


def _transaction_control_fix(migration: Migration, keyword: str) -> str:
    """What to do, in the words of the folder's layout."""
    if migration.directives.no_transaction:
        return (
            "remove it: each statement of a no-transaction file commits on its own with "
            "its journal step; statements that must commit together belong in a "
            "transactional file"
        )
    layout = migration.layout
    if layout in OPENS_NO_TRANSACTION:
        return (
            f"a {layout} file may be wrapped whole in BEGIN; ... COMMIT; (its first and last "
            "statements: the runner then runs the rest in its own transaction with the "
            f"ledger row), and nothing else in it may begin, commit or roll back: remove this "
            f"{keyword} (put a second transaction in a file of its own)"
        )
    own = _own_kind(migration.filename)
    if layout is None and own:
        return (
            f"remove it{' and its COMMIT' if keyword in ('BEGIN', 'START') else ''}: {own} "
            "is this runner's own, not another tool's, so "
            "in every layout (golang-migrate's and prisma's too) it runs in one transaction "
            "the runner opens, with its ledger row, and takes no BEGIN; ... COMMIT; wrapper"
        )
    if layout is None:
        why = (
            "(only a golang-migrate or prisma file, whose tool opens no transaction, may be "
            "wrapped whole in BEGIN; ... COMMIT;)"
        )
    else:
        why = f"({layout} too runs each file in a transaction it opens itself)"
    return (
        "remove it: the runner runs the file in one transaction with its ledger row "
        f"{why}, or make the file '-- natlangchain: no-transaction'"
    )


async def _check_extensions(conn: asyncpg.Connection, pending: Sequence[Migration]) -> None:
    """Every extension that a pending file declares it needs is available, new enough."""
    needs = [(m, req) for m in pending for req in m.directives.requires_extensions]
    if not needs:
        return
    rows = await conn.fetch(_EXTENSIONS_QUERY, sorted({req.name for _, req in needs}))
    available = {row["name"]: row for row in rows}
    for migration, requirement in needs:
        row = available.get(requirement.name)
        have = row["version"] if row is not None else None
        too_old = (
            have is not None
            and requirement.min_version is not None
            and _version(have) < _version(requirement.min_version)
        )
        if have is None or too_old:
            found = f"has version {have}" if have else "does not have it"
            wanted = f" {requirement.min_version} or newer" if requirement.min_version else ""
            hint = _INSTALL_HINTS.get(requirement.name, f"install the {requirement.name} extension")
            raise PrerequisiteError(
                f"{migration.filename} needs the PostgreSQL extension '{requirement.name}'"
                f"{wanted} and this server {found}; {hint}, or leave this migration out with "
                f"--skip {migration.version}"
            )
        if row is not None and not row["may_create"]:
            # Refused now, not when the file runs: the migrations before it would be
            # applied and the database left half-way.
            raise PrerequisiteError(
                f"{migration.filename} needs the extension '{requirement.name}', which is not "
                f"installed in database {row['database']} and which role {row['role']} may not "
                f"create (it is not a trusted extension, and the role is not a superuser): ask "
                f"a superuser (the DBA) to run CREATE EXTENSION {requirement.name}; in database "
                f"{row['database']}, then run again (or leave this migration out with --skip "
                f"{migration.version}). Nothing was applied"
            )


# Available extensions with the version a CREATE EXTENSION would install, and whether this
# role may create the ones not installed yet: a superuser may; anyone else only a trusted
# extension (PostgreSQL 13+), and only with CREATE on the database.
_EXTENSIONS_QUERY = """
SELECT e.name, coalesce(e.installed_version, e.default_version) AS version,
       current_user AS role, current_database() AS database,
       e.installed_version IS NOT NULL
       OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR coalesce((SELECT v.trusted FROM pg_available_extension_versions v
                    WHERE v.name = e.name AND v.version = e.default_version), false)
          AND has_database_privilege(current_database(), 'CREATE') AS may_create
FROM pg_available_extensions e
WHERE e.name = ANY($1::text[])
"""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())
