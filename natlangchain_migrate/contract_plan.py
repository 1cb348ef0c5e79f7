"""Deciding which contract parts may run: a pure function of (files, ledgers, replicas).

A migration ``NNN_name.sql`` (its expand part, applied at start-up) may carry a contract
part ``NNN_name.contract.sql``: what only the new release can live with (dropping the old
column, table, trigger or view). The contract part of version V runs when its expand part
is applied and no alive replica ships a release below V; parts run in version order, so
one that must wait holds back those above it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from natlangchain_migrate.directives import parse_directives
from natlangchain_migrate.discovery import Migration, checksum
from natlangchain_migrate.errors import ConfigurationError, DriftError
from natlangchain_migrate.replicas import Replica

CONTRACTS_TABLE = "schema_contracts"


class ContractState(StrEnum):
    """What ``--status`` and ``contract`` say of one contract part."""

    APPLIED = "APPLIED"
    PENDING = "PENDING"  # may run now
    WAITING = "WAITING"  # for old replicas: alive ones ship a release below its version
    EXPAND_PENDING = "EXPAND_PENDING"  # its expand part is not applied yet
    CHANGED = "CHANGED"  # applied, and its file changed since: drift
    MISSING = "MISSING"  # applied, and its file is gone: drift


class ContractRow(NamedTuple):
    """One row of ``schema_contracts``: a contract part that ran."""

    version: int
    name: str
    checksum: str
    applied_at: datetime | None = None
    execution_ms: float | None = None
    forced: bool = False


class ContractEntry(NamedTuple):
    """One contract part's state, with the alive old replicas it waits for."""

    version: int
    name: str
    state: ContractState
    file_checksum: str | None = None
    row: ContractRow | None = None
    waiting_for: tuple[Replica, ...] = ()


def contract_part(migration: Migration) -> Migration | None:
    """The contract file as a Migration of its own (so its errors point into it)."""
    if migration.contract_file is None:
        return None
    from natlangchain_migrate.discovery import read_text

    filename = migration.contract_file.name
    sql = read_text(migration.contract_file)
    directives = parse_directives(filename, sql)
    if directives.no_transaction:
        raise ConfigurationError(
            f"{filename}: a contract part runs in one transaction with its ledger row; remove "
            "'-- natlangchain: no-transaction' (put such statements in a migration of their own)"
        )
    return Migration(
        version=migration.version,
        name=filename.removesuffix(".sql"),
        filename=filename,
        sql=sql,
        checksum=checksum(sql),
        directives=directives,
    )


def contract_undo(migration: Migration) -> Migration | None:
    """The contract part's undo file (``NNN_name.contract.down.sql``) as a Migration."""
    if migration.contract_down_file is None:
        return None
    from natlangchain_migrate.discovery import read_text

    filename = migration.contract_down_file.name
    sql = read_text(migration.contract_down_file)
    return Migration(
        version=migration.version,
        name=filename.removesuffix(".sql"),
        filename=filename,
        sql=sql,
        checksum="",
        directives=parse_directives(filename, sql),
    )


def plan_contracts(
    parts: Sequence[Migration],
    expanded: Collection[int],
    rows: Sequence[ContractRow],
    alive: Sequence[Replica],
    *,
    highest_local: int,
) -> list[ContractEntry]:
    """Every contract part's state, by version. ``parts`` are the contract files (as from
    ``contract_part``), ``expanded`` the versions whose expand part is applied, ``alive``
    the replicas seen within the max age. A row above ``highest_local`` was written by a
    newer release: not drift, and not listed."""
    files = {part.version: part for part in parts}
    recorded = {row.version: row for row in rows}
    entries = []
    for version in sorted(files.keys() | recorded.keys()):
        part, row = files.get(version), recorded.get(version)
        if part is None:
            if row is not None and version <= highest_local:
                entries.append(ContractEntry(version, row.name, ContractState.MISSING, None, row))
            continue
        older = tuple(replica for replica in alive if replica.release < version)
        if row is not None:
            same = row.checksum == part.checksum
            state = ContractState.APPLIED if same else ContractState.CHANGED
        elif version not in expanded:
            state = ContractState.EXPAND_PENDING
        elif older:
            state = ContractState.WAITING
        else:
            state = ContractState.PENDING
        entries.append(ContractEntry(version, part.name, state, part.checksum, row, older))
    return entries


def runnable(entries: Sequence[ContractEntry], *, force: bool) -> list[ContractEntry]:
    """The parts to run now, in version order, up to the first that must wait. ``force``
    runs those that wait for old replicas too, never one whose expand part is pending."""
    chosen = []
    for entry in entries:
        if entry.state is ContractState.APPLIED:
            continue
        if entry.state is ContractState.PENDING or (force and entry.state is ContractState.WAITING):
            chosen.append(entry)
            continue
        break
    return chosen


def waiting(entries: Sequence[ContractEntry], *, force: bool) -> list[ContractEntry]:
    """The parts not applied that cannot run now: old replicas alive, an expand part
    pending, or a lower part that waits."""
    ran = {entry.version for entry in runnable(entries, force=force)}
    todo = (ContractState.PENDING, ContractState.WAITING, ContractState.EXPAND_PENDING)
    return [entry for entry in entries if entry.state in todo and entry.version not in ran]


def raise_on_contract_drift(entries: Sequence[ContractEntry]) -> None:
    """Refuse to go on when an applied contract part's file changed or is gone."""
    problems = [
        f"contract part {entry.version:03d} was applied with a different checksum; restore "
        f"{entry.name}.sql, or put the change in a new migration's contract part, or accept "
        "the file as it is with --repair"
        for entry in entries
        if entry.state is ContractState.CHANGED
    ] + [
        f"contract part {entry.version:03d} ({entry.name}) is applied but its file is gone; "
        f"restore {entry.name}.sql, or, if it was removed on purpose, forget its row with "
        "--repair"
        for entry in entries
        if entry.state is ContractState.MISSING
    ]
    if problems:
        raise DriftError("; ".join(problems))
