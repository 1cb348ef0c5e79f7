"""natlangchain_migrate: NatLangChain's PostgreSQL schema, applied safely from many replicas.

report = await natlangchain_migrate.migrate()          # asyncio apps
report = natlangchain_migrate.run_migrations()         # Flask and other sync apps
"""

from typing import TYPE_CHECKING, Any

from natlangchain_migrate.errors import (
    BaselineError,
    ConfigurationError,
    ConnectionRejectedError,
    DatabaseUnreachableError,
    DriftError,
    ExitCode,
    FutureMigrationsError,
    LockRetriesExhaustedError,
    LockTimeoutError,
    MigrateError,
    MigrationFailedError,
    OutOfOrderError,
    PrerequisiteError,
    ReadOnlyDatabaseError,
)

if TYPE_CHECKING:
    from natlangchain_migrate.contracts import ContractReport, contract
    from natlangchain_migrate.logs import route_to_stdlib_logging
    from natlangchain_migrate.operations import baseline, repair, status
    from natlangchain_migrate.replicas import heartbeat, start_heartbeat
    from natlangchain_migrate.results import ContractResult, MigrationReport, MigrationResult
    from natlangchain_migrate.runner import migrate, run_migrations
    from natlangchain_migrate.undo import RollbackResult, rollback

# The runner's modules load on first use: `python -m natlangchain_migrate` imports this
# package first, and a no-op start-up should not pay for what it does not run.
_LAZY = {
    "ContractReport": "contracts",
    "ContractResult": "results",
    "contract": "contracts",
    "heartbeat": "replicas",
    "start_heartbeat": "replicas",
    "RollbackResult": "undo",
    "baseline": "operations",
    "repair": "operations",
    "rollback": "undo",
    "route_to_stdlib_logging": "logs",
    "status": "operations",
    "MigrationReport": "results",
    "MigrationResult": "results",
    "migrate": "runner",
    "run_migrations": "runner",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'natlangchain_migrate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"natlangchain_migrate.{_LAZY[name]}"), name)


__all__ = [
    "BaselineError",
    "ConfigurationError",
    "ConnectionRejectedError",
    "ContractReport",
    "ContractResult",
    "DatabaseUnreachableError",
    "DriftError",
    "ExitCode",
    "FutureMigrationsError",
    "LockRetriesExhaustedError",
    "LockTimeoutError",
    "MigrateError",
    "MigrationFailedError",
    "MigrationReport",
    "MigrationResult",
    "OutOfOrderError",
    "PrerequisiteError",
    "ReadOnlyDatabaseError",
    "RollbackResult",
    "baseline",
    "contract",
    "heartbeat",
    "migrate",
    "repair",
    "rollback",
    "route_to_stdlib_logging",
    "run_migrations",
    "start_heartbeat",
    "status",
]
