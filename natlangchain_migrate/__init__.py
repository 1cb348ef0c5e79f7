"""natlangchain_migrate: NatLangChain's PostgreSQL schema, applied safely from many replicas.

report = await natlangchain_migrate.migrate()          # asyncio apps
report = natlangchain_migrate.run_migrations()         # Flask and other sync apps
"""

from natlangchain_migrate.errors import (
    ConfigurationError,
    ConnectionRejectedError,
    DatabaseUnreachableError,
    DriftError,
    ExitCode,
    LockRetriesExhaustedError,
    LockTimeoutError,
    MigrateError,
    MigrationFailedError,
    PrerequisiteError,
    ReadOnlyDatabaseError,
)
from natlangchain_migrate.operations import RollbackResult, repair, rollback, status
from natlangchain_migrate.results import MigrationReport, MigrationResult
from natlangchain_migrate.runner import migrate, run_migrations

__all__ = [
    "ConfigurationError",
    "ConnectionRejectedError",
    "DatabaseUnreachableError",
    "DriftError",
    "ExitCode",
    "LockRetriesExhaustedError",
    "LockTimeoutError",
    "MigrateError",
    "MigrationFailedError",
    "MigrationReport",
    "MigrationResult",
    "PrerequisiteError",
    "ReadOnlyDatabaseError",
    "RollbackResult",
    "migrate",
    "repair",
    "rollback",
    "run_migrations",
    "status",
]
