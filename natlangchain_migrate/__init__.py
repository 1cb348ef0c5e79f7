"""natlangchain_migrate: NatLangChain's PostgreSQL schema, applied safely from many replicas.

report = await natlangchain_migrate.migrate()          # asyncio apps
report = natlangchain_migrate.run_migrations()         # Flask and other sync apps
report = await natlangchain_migrate.Migrator(dsn).up() # the object the functions wrap
"""

from typing import TYPE_CHECKING, Any

from natlangchain_migrate.errors import (
    BackfillThrottledError,
    BaselineError,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    ConnectionRejectedError,
    DatabaseUnreachableError,
    DriftError,
    ExitCode,
    ForeignLedgerError,
    FutureMigrationsError,
    InvalidIndexError,
    LockLostError,
    LockRetriesExhaustedError,
    LockTimeoutError,
    MigrateError,
    MigrationFailedError,
    OutOfOrderError,
    PrerequisiteError,
    PrivilegeError,
    ReadOnlyDatabaseError,
    SchemaNotRestoredError,
    ServerError,
    ServerSettingError,
    SquawkUnavailableError,
    StoppedBySignalError,
    TransactionControlError,
)

if TYPE_CHECKING:
    from natlangchain_migrate.api import (
        baseline,
        contract,
        migrate,
        repair,
        rollback,
        run_migrations,
        status,
    )
    from natlangchain_migrate.contracts import ContractReport
    from natlangchain_migrate.fleet_api import migrate_fleet
    from natlangchain_migrate.fleet_report import FleetReport, TargetResult
    from natlangchain_migrate.logs import route_to_stdlib_logging
    from natlangchain_migrate.migrator import Migrator
    from natlangchain_migrate.plan import AppliedMigration, MigrationPlan, State, StatusEntry
    from natlangchain_migrate.replicas import heartbeat, start_heartbeat
    from natlangchain_migrate.results import ContractResult, MigrationReport, MigrationResult
    from natlangchain_migrate.settings import (
        ExecutionOptions,
        LockMode,
        LockOptions,
        MigrateOptions,
    )
    from natlangchain_migrate.tenants import create_tenant, create_tenant_database
    from natlangchain_migrate.undo import RollbackResult

# The runner's modules load on first use: `python -m natlangchain_migrate` imports this
# package first, and a no-op start-up should not pay for what it does not run.
_LAZY = {
    "AppliedMigration": "plan",
    "ContractReport": "contracts",
    "ContractResult": "results",
    "ExecutionOptions": "settings",
    "FleetReport": "fleet_report",
    "LockMode": "settings",
    "LockOptions": "settings",
    "MigrateOptions": "settings",
    "MigrationPlan": "plan",
    "MigrationReport": "results",
    "MigrationResult": "results",
    "Migrator": "migrator",
    "RollbackResult": "undo",
    "State": "plan",
    "StatusEntry": "plan",
    "TargetResult": "fleet_report",
    "baseline": "api",
    "contract": "api",
    "create_tenant": "tenants",
    "create_tenant_database": "tenants",
    "heartbeat": "replicas",
    "migrate": "api",
    "migrate_fleet": "fleet_api",
    "repair": "api",
    "rollback": "api",
    "route_to_stdlib_logging": "logs",
    "run_migrations": "api",
    "start_heartbeat": "replicas",
    "status": "api",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'natlangchain_migrate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"natlangchain_migrate.{_LAZY[name]}"), name)


__all__ = [
    "AppliedMigration",
    "BackfillThrottledError",
    "BaselineError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionLostError",
    "ConnectionRejectedError",
    "ContractReport",
    "ContractResult",
    "DatabaseUnreachableError",
    "DriftError",
    "ExecutionOptions",
    "ExitCode",
    "FleetReport",
    "ForeignLedgerError",
    "FutureMigrationsError",
    "InvalidIndexError",
    "LockLostError",
    "LockMode",
    "LockOptions",
    "LockRetriesExhaustedError",
    "LockTimeoutError",
    "MigrateError",
    "MigrateOptions",
    "MigrationFailedError",
    "MigrationPlan",
    "MigrationReport",
    "MigrationResult",
    "Migrator",
    "OutOfOrderError",
    "PrerequisiteError",
    "PrivilegeError",
    "ReadOnlyDatabaseError",
    "RollbackResult",
    "SchemaNotRestoredError",
    "ServerError",
    "ServerSettingError",
    "SquawkUnavailableError",
    "State",
    "StatusEntry",
    "StoppedBySignalError",
    "TargetResult",
    "TransactionControlError",
    "baseline",
    "contract",
    "create_tenant",
    "create_tenant_database",
    "heartbeat",
    "migrate",
    "migrate_fleet",
    "repair",
    "rollback",
    "route_to_stdlib_logging",
    "run_migrations",
    "start_heartbeat",
    "status",
]
