"""The errors a run can end with, each with the exit code the CLI gives it.

Callers decide on the class, never on message text. Messages are sentences that
name the migration or setting and say what to do; none carries a password.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from natlangchain_migrate.results import MigrationResult


class ExitCode(IntEnum):
    """Process exit codes of the CLI, documented in README.md."""

    OK = 0
    MIGRATION_FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    LOCK_TIMEOUT = 4
    DRIFT = 5
    PREREQUISITE = 6
    CONNECTION_REJECTED = 7
    READ_ONLY = 8
    LOCK_RETRIES_EXHAUSTED = 9
    CHECK_PENDING = 10
    CHECK_DRIFT = 11
    CHECK_FAILED = 12
    LOCK_LOST = 13
    PRIVILEGE = 14
    SERVER = 15  # the server's resources (disk, memory, connections) or its own fault
    SERVER_SETTING = 16  # a server setting or an operator stopped it (timeouts, cancels)
    CONFLICT = 17  # another session got in the way (deadlock, serialization, in use)
    LINT_FINDINGS = 20
    SQUAWK_UNAVAILABLE = 21
    SCHEMA_NOT_RESTORED = 22  # verify: a down file does not restore the schema
    OUT_OF_ORDER = 23
    BASELINE_REFUSED = 24
    CONTRACT_WAITING = 25  # contract: a contract part must wait (old replicas alive, ...)
    FLEET_FAILED = 26  # fleet: some targets failed (rolled back); the others were migrated
    FLEET_STOPPED = 27  # fleet: the rollout stopped early (canary failed, --max-failures)
    INTERNAL = 70
    INTERRUPTED = 130  # SIGINT: 128 + 2, as shells report it
    TERMINATED = 143  # SIGTERM: 128 + 15


class MigrateError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = ExitCode.MIGRATION_FAILED


class StoppedBySignalError(MigrateError):
    """Raised when SIGTERM or SIGINT stopped the run: the running migration was cancelled
    on the server and rolled back, and the lock released."""

    def __init__(self, message: str, *, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigurationError(MigrateError):
    """Raised for bad settings or files: a bad DSN, two files with one version, a bad name."""

    exit_code = ExitCode.USAGE


def unreadable_file(entry: object, error: OSError) -> ConfigurationError:
    """The error for a migration file the runner's user cannot read, saying what to do."""
    return ConfigurationError(
        f"{entry}: cannot read it ({error.strerror or error}); give the runner's user "
        "read access to the file (chmod a+r), or remove it"
    )


class ForeignLedgerError(ConfigurationError):
    """Another tool's ledger where ours should be; the message gives the adopt command,
    which the CLI completes with the --migrations-dir it was given. ``found_in``: the
    schema of the session's search_path that holds it, when not ``schema`` (the target)."""

    def __init__(
        self, message: str, *, tool: str, table: str, schema: str, found_in: str = ""
    ) -> None:
        super().__init__(message)
        self.tool, self.table, self.schema, self.found_in = tool, table, schema, found_in


class DatabaseUnreachableError(MigrateError):
    """Raised when no connection could be made before the deadline (refused, DNS, starting up)."""

    exit_code = ExitCode.UNREACHABLE


class TransactionControlError(ConfigurationError):
    """Raised when a file would begin or commit a transaction that the runner must own."""


class ConnectionLostError(DatabaseUnreachableError):
    """Raised when the connection died mid-run (server restart or failover,
    pg_terminate_backend, network): not the file's fault. What was running was rolled
    back by the server and not recorded; ``applied`` lists what this run committed."""

    def __init__(self, message: str, *, applied: Sequence[MigrationResult] = ()) -> None:
        super().__init__(message)
        self.applied = list(applied)


class ConnectionRejectedError(MigrateError):
    """Raised when the server answers but refuses us: wrong password, unknown database or role.

    Retrying cannot help, so it is never retried.
    """

    exit_code = ExitCode.CONNECTION_REJECTED


class PrivilegeError(MigrateError):
    """Raised when the role lacks a privilege a migration or the ledger needs (42501);
    the message names the role and the GRANT that fixes it. Nothing was kept."""

    exit_code = ExitCode.PRIVILEGE


class ReadOnlyDatabaseError(MigrateError):
    """Raised when the server is a read-only standby, or the database or role is set
    read-only (25006); migrations must run where writes are allowed."""

    exit_code = ExitCode.READ_ONLY


class ServerError(MigrateError):
    """Raised when the server could not do what a migration asked for lack of a resource
    (class 53: disk, memory, connections) or by a fault of its own (58, XX, F0): nothing
    is wrong with the file. ``sqlstate`` is the server's code; in a migration,
    ``location`` names its file (and line) and ``applied`` what this run committed."""

    exit_code = ExitCode.SERVER

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        location: str | None = None,
        applied: Sequence[MigrationResult] = (),
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.location = location
        self.applied = list(applied)


class ServerSettingError(ServerError):
    """Raised when a server setting or an operator stopped the work: statement_timeout,
    transaction_timeout, idle timeouts, a cancel request (57014, 25P03, 25P04, 57P05, 72)."""

    exit_code = ExitCode.SERVER_SETTING


class ConflictError(ServerError):
    """Raised when another session got in the way: a deadlock (40P01), a serialization
    failure (40001), an object in use (55006). Running again usually succeeds."""

    exit_code = ExitCode.CONFLICT


class BackfillThrottledError(ConflictError):
    """Raised when a backfill waited longer than its ``max-wait`` before a batch while
    sessions waited for locks on its table or standbys lagged; the batches done stay
    committed with its position, and the next run resumes there."""


class LockTimeoutError(MigrateError):
    """Raised when another runner held the advisory lock for longer than the lock timeout."""

    exit_code = ExitCode.LOCK_TIMEOUT


class LockLostError(MigrateError):
    """Raised when the advisory lock was not held at release: another session unlocked it,
    or a pooler gave the lock's server connection to someone else."""

    exit_code = ExitCode.LOCK_LOST


class DriftError(MigrateError):
    """Raised when an applied migration's file changed or is gone."""

    exit_code = ExitCode.DRIFT


class FutureMigrationsError(DriftError):
    """Raised, only when asked (``refuse_future=True``, ``--refuse-future``), when the
    database holds versions above every local file: a newer release applied them.
    ``versions`` lists them. By default they are not an error (one warning event)."""

    def __init__(self, message: str, *, versions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.versions = list(versions)


class OutOfOrderError(MigrateError):
    """Raised under strict order, before anything runs, when a pending version is lower
    than the highest applied one."""

    exit_code = ExitCode.OUT_OF_ORDER


class BaselineError(MigrateError):
    """Raised by ``baseline`` when the ledger already holds rows and no --force was given."""

    exit_code = ExitCode.BASELINE_REFUSED


class PrerequisiteError(MigrateError):
    """Raised before a migration runs when the server lacks an extension it declares it needs."""

    exit_code = ExitCode.PREREQUISITE


class SquawkUnavailableError(MigrateError):
    """Raised by ``lint`` when the squawk linter is not installed or could not run."""

    exit_code = ExitCode.SQUAWK_UNAVAILABLE


class MigrationFailedError(MigrateError):
    """Raised when a migration's SQL fails. Carries what was applied before it.

    ``applied`` lists the migrations this run committed before the failure; the
    failed one left no ledger row (or, without a transaction, an incomplete one).
    ``version`` is None for a repeatable (``R__name.sql``) migration.
    """

    exit_code = ExitCode.MIGRATION_FAILED

    def __init__(
        self,
        message: str,
        *,
        version: int | None,
        location: str,
        sqlstate: str | None,
        applied: Sequence[MigrationResult] = (),
    ) -> None:
        super().__init__(message)
        self.version = version
        self.location = location
        self.sqlstate = sqlstate
        self.applied = list(applied)


class LockRetriesExhaustedError(MigrationFailedError):
    """Raised when a migration kept hitting lock_timeout (55P03) through every retry."""

    exit_code = ExitCode.LOCK_RETRIES_EXHAUSTED


class InvalidIndexError(MigrationFailedError):
    """Raised when an INVALID index left by a failed concurrent build cannot be dropped
    before building it again."""


class SchemaNotRestoredError(MigrateError):
    """Raised by ``verify`` when a down file does not give back the schema from before its
    migration (or has none), or applying the migration again gives another schema.

    ``step`` is ``"down"``, ``"up again"`` or ``"down again"``; ``diff`` is a unified
    diff of the expected and the actual schema description; ``verified`` lists the
    versions checked before this one, newest first.
    """

    exit_code = ExitCode.SCHEMA_NOT_RESTORED

    def __init__(
        self,
        message: str,
        *,
        version: int,
        name: str,
        step: str,
        file: str,
        diff: str = "",
        verified: Sequence[int] = (),
        summary: str | None = None,
    ) -> None:
        super().__init__(message)
        self.summary = summary or message  # the message without the quoted differences
        self.version = version
        self.name = name
        self.step = step
        self.file = file
        self.diff = diff
        self.verified = list(verified)
