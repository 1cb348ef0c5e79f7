"""Every server error classified by whose it is: one table from SQLSTATE to a cause, an
exit code and the advice that fits.

PostgreSQL's error codes (its errcodes appendix) say by their class who owns the
problem: the file (42 syntax, 22 data, 23 constraints), the server's resources (53),
an operator or a server setting (57, timeouts), privileges (42501), the connection
(08), a missing prerequisite. A few codes inside a class need their own row. Every
failure the runner reports goes through ``classify``, so "fix the file" (exit 1) is
said only where the file is the cause, and exit 70 is left for this tool's own bugs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import NamedTuple

import asyncpg

from natlangchain_migrate.errors import (
    ConflictError,
    ConnectionLostError,
    ConnectionRejectedError,
    ExitCode,
    MigrateError,
    PrerequisiteError,
    PrivilegeError,
    ReadOnlyDatabaseError,
    ServerError,
    ServerSettingError,
)


class Cause(StrEnum):
    """Whose the problem is, which decides the exit code and the advice."""

    FILE = "the migration file"
    SERVER = "the server's resources or health"
    SETTING = "a server setting or an operator"
    READ_ONLY = "a read-only server, database or role"
    PRIVILEGE = "the role's privileges"
    CONNECTION = "the connection"
    REJECTED = "the credentials or the database name"
    PREREQUISITE = "something the server lacks"
    CONFLICT = "another session"


class Classification(NamedTuple):
    """What a SQLSTATE means: whose it is, the exit code, what to do."""

    cause: Cause
    exit_code: ExitCode
    advice: str


EXIT_CODES = {
    Cause.FILE: ExitCode.MIGRATION_FAILED,
    Cause.SERVER: ExitCode.SERVER,
    Cause.SETTING: ExitCode.SERVER_SETTING,
    Cause.READ_ONLY: ExitCode.READ_ONLY,
    Cause.PRIVILEGE: ExitCode.PRIVILEGE,
    Cause.CONNECTION: ExitCode.UNREACHABLE,
    Cause.REJECTED: ExitCode.CONNECTION_REJECTED,
    Cause.PREREQUISITE: ExitCode.PREREQUISITE,
    Cause.CONFLICT: ExitCode.CONFLICT,
}

ERRORS: dict[Cause, type[MigrateError]] = {
    Cause.SERVER: ServerError,
    Cause.SETTING: ServerSettingError,
    Cause.READ_ONLY: ReadOnlyDatabaseError,
    Cause.PRIVILEGE: PrivilegeError,
    Cause.CONNECTION: ConnectionLostError,
    Cause.REJECTED: ConnectionRejectedError,
    Cause.PREREQUISITE: PrerequisiteError,
    Cause.CONFLICT: ConflictError,
}

_ADVICE = {
    Cause.FILE: "Fix the file and run again",
    Cause.SERVER: (
        "Nothing is wrong with the file: the server could not do it; fix the server (ask "
        "the DBA), then run again"
    ),
    Cause.SETTING: (
        "Nothing is wrong with the file: a server setting or an operator stopped it; "
        "find which (the role's or database's settings, pg_cancel_backend), change it, "
        "then run again"
    ),
    Cause.READ_ONLY: (
        "Nothing is wrong with the file: the server refuses writes (a standby, or "
        "default_transaction_read_only = on for the database or the role); run against "
        "the primary, or have the DBA allow writes (ALTER DATABASE <db> SET "
        "default_transaction_read_only = off, or ALTER ROLE ...), then run again"
    ),
    Cause.PRIVILEGE: (
        "The role lacks a privilege: grant it (GRANT USAGE, CREATE ON SCHEMA <schema> TO "
        "<role>;) or run as the objects' owner, then run again"
    ),
    Cause.CONNECTION: (
        "Nothing is wrong with the file: the connection was lost (a restart or "
        "failover, pg_terminate_backend, the network); run again (with --wait SECONDS "
        "the runner reconnects by itself)"
    ),
    Cause.REJECTED: (
        "The server refused the session: check the user, password and database name in "
        "--database-url, DATABASE_URL or dsn="
    ),
    Cause.PREREQUISITE: (
        "The server lacks something the file needs (an extension, a library, a "
        "feature): install it on the server, or leave this migration out with --skip, "
        "then run again"
    ),
    Cause.CONFLICT: (
        "Nothing is wrong with the file: another session got in the way (a deadlock, a "
        "concurrent update, an object in use); run again, at a quieter time if it repeats"
    ),
}

# The classes, by the first two characters of the SQLSTATE. Any class not listed is the
# file's: that is where a statement or a RAISE comes from.
_BY_CLASS: dict[str, Cause] = {
    "08": Cause.CONNECTION,  # connection exception
    "28": Cause.REJECTED,  # invalid authorization specification
    "53": Cause.SERVER,  # insufficient resources
    "57": Cause.SETTING,  # operator intervention
    "58": Cause.SERVER,  # system error (I/O)
    "72": Cause.SETTING,  # snapshot too old (old_snapshot_threshold)
    "F0": Cause.SERVER,  # configuration file error
    "XX": Cause.SERVER,  # internal error, data or index corrupted
}

# The codes whose class does not say it all, each with its own advice (None: the cause's).
_BY_CODE: dict[str, tuple[Cause, str | None]] = {
    "25001": (
        Cause.FILE,
        "The statement cannot run inside a transaction block: move it into a file marked "
        "'-- natlangchain: no-transaction', then run again",
    ),
    "25006": (Cause.READ_ONLY, None),  # read_only_sql_transaction
    "25P03": (  # idle_in_transaction_session_timeout
        Cause.SETTING,
        "Nothing is wrong with the file: the server's idle_in_transaction_session_timeout "
        "ended the session; raise or unset it for the migrating role (ALTER ROLE <role> SET "
        "idle_in_transaction_session_timeout = 0), then run again",
    ),
    "25P04": (  # transaction_timeout (PostgreSQL 17+)
        Cause.SETTING,
        "Nothing is wrong with the file: the server's transaction_timeout ended the "
        "session (a server limit, not a lost connection: --wait does not retry it); raise "
        "or unset it for the migrating role (ALTER ROLE <role> SET transaction_timeout = "
        "0), then run again",
    ),
    "40001": (Cause.CONFLICT, None),  # serialization_failure
    "40P01": (Cause.CONFLICT, None),  # deadlock_detected
    "40003": (Cause.CONNECTION, None),  # statement_completion_unknown
    "42501": (Cause.PRIVILEGE, None),  # insufficient_privilege
    "53100": (
        Cause.SERVER,
        "Nothing is wrong with the file: the server's disk is full; free space or grow "
        "the volume (ask the DBA), then run again",
    ),
    "53200": (
        Cause.SERVER,
        "Nothing is wrong with the file: the server ran out of memory, or of shared memory "
        "for locks (a migration that touches many tables needs max_locks_per_transaction "
        "raised, with a restart); ask the DBA, then run again",
    ),
    "53300": (
        Cause.SERVER,
        "Nothing is wrong with the file: the server has no free connection slot "
        "(max_connections); close idle sessions or raise the limit, then run again (with "
        "--wait SECONDS the runner waits for a slot)",
    ),
    "53400": (
        Cause.SETTING,
        "Nothing is wrong with the file: a configured server limit was reached (the "
        "server's hint names the setting); raise it, then run again",
    ),
    "55006": (Cause.CONFLICT, None),  # object_in_use
    "55P03": (
        Cause.CONFLICT,
        "Nothing is wrong with the file: another session held a lock the migration needed "
        "past lock_timeout; end or wait out that session, or raise --pg-lock-timeout / "
        "--lock-retries, then run again",
    ),
    "57014": (  # query_canceled
        Cause.SETTING,
        "Nothing is wrong with the file: statement_timeout (--statement-timeout, a "
        "statement_timeout directive, or the server's setting) or an operator "
        "(pg_cancel_backend) cancelled the statement; raise --statement-timeout "
        "(statement_timeout=) for a long migration, or find who cancelled it, then run again",
    ),
    "57P01": (Cause.CONNECTION, None),  # admin_shutdown (pg_terminate_backend, shutdown)
    "57P02": (Cause.CONNECTION, None),  # crash_shutdown
    "57P03": (Cause.CONNECTION, None),  # cannot_connect_now (starting up)
    "57P04": (Cause.CONNECTION, None),  # database_dropped
    "57P05": (  # idle_session_timeout
        Cause.SETTING,
        "Nothing is wrong with the file: the server's idle_session_timeout ended the "
        "session; raise or unset it for the migrating role, then run again",
    ),
    "58P01": (
        Cause.PREREQUISITE,
        "The server lacks a file the statement needs (an extension's or a library's files "
        "are not installed on the server): install them there, or leave this migration "
        "out with --skip, then run again",
    ),
}


# lock_timeout inside a migration is retried (--lock-retries) before it is reported.
_EXIT_OVERRIDES = {"55P03": ExitCode.LOCK_RETRIES_EXHAUSTED}


def classify(sqlstate: str | None) -> Classification:
    """The cause, exit code and advice of a SQLSTATE (a code first, then its class)."""
    code = (sqlstate or "").upper()
    cause, advice = _BY_CODE.get(code, (_BY_CLASS.get(code[:2], Cause.FILE), None))
    exit_code = _EXIT_OVERRIDES.get(code, EXIT_CODES[cause])
    return Classification(cause, exit_code, advice or _ADVICE[cause])


def table() -> list[tuple[str, Classification]]:
    """The whole table, rows by code then by class, for README and tests."""
    rows = [(code, classify(code)) for code in sorted(_BY_CODE)]
    rows += [(f"{prefix}xxx", classify(f"{prefix}000")) for prefix in sorted(_BY_CLASS)]
    return rows


_FIELDS = tuple(getattr(type(asyncpg.PostgresError), "_field_map", {}).values())


def server_error(error: BaseException) -> asyncpg.PostgresError | None:
    """The server's error in ``error``, as a PostgresError.

    Two of asyncpg's ways hide it: a FATAL that ends the session (transaction_timeout's
    25P04) comes as "connection does not exist" (08003) caused by the server's error,
    which is the one that says why; and an ERROR whose SQLSTATE is of a warning class
    (01, 02: a RAISE can use them) comes as a PostgresWarning, which is no
    PostgresError: a copy of it is, so every handler sees it."""
    cause = error.__cause__
    if isinstance(error, asyncpg.ConnectionDoesNotExistError) and isinstance(
        cause, asyncpg.PostgresError
    ):
        return cause
    if isinstance(error, asyncpg.PostgresError):
        return error
    if isinstance(error, asyncpg.PostgresLogMessage) and getattr(error, "sqlstate", None):
        copy = asyncpg.exceptions.UnknownPostgresError(str(error.args[0] if error.args else ""))
        for field in _FIELDS:
            setattr(copy, field, getattr(error, field, None))
        return copy
    return None


def outside_a_migration(error: asyncpg.PostgresError, doing: str = "") -> MigrateError | None:
    """The error for a server error outside any migration file (the ledger, the lock, a
    read): the table's class and advice, and the server's words; ``doing`` says what the
    runner was doing. None for a cause of the file's kind: the runner's own SQL refused
    for its text is this tool's bug, left to surface as one (exit 70)."""
    found = classify(error.sqlstate)
    kind = ERRORS.get(found.cause)
    if kind is None:
        return None
    message = " ".join(str(getattr(error, "message", None) or error).split())
    detail = "".join(
        f"; {label}: {' '.join(str(value).split()).rstrip('.')}"
        for label, value in (("detail", error.detail), ("hint", error.hint))
        if value
    )
    advice = found.advice.replace("Nothing is wrong with the file: ", "")
    advice = advice[:1].upper() + advice[1:]
    return kind(f"{doing + ': ' if doing else ''}{error.sqlstate} {message}{detail}. {advice}")


@contextmanager
def classified(doing: str = "") -> Iterator[None]:
    """Turn a server error that no migration-level handler took into the table's error."""
    try:
        yield
    except Exception as raised:
        error = server_error(raised)
        failure = None if error is None else outside_a_migration(error, doing)
        if failure is None:
            raise
        raise failure from raised
