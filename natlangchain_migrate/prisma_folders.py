"""prisma folders that share a timestamp, and what to do about them.

prisma tells migrations apart by folder name (``_prisma_migrations.migration_name``), this
runner by version, the folder's timestamp: two folders written in one second (LiteLLM's
history has them) are one version here. No scheme is invented to tell them apart; the
refusal says which folder to rename, to what, and the row to rename with it in prisma's
ledger, so that prisma and ``adopt --from prisma`` still match the folder to its row.
"""

from __future__ import annotations

from collections.abc import Mapping

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.sqltext import standard_literal

PRISMA_TABLE = "_prisma_migrations"


def row_rename(old: str, new: str) -> str:
    """The statement that renames a migration's row in prisma's ledger."""
    return (
        f"UPDATE {PRISMA_TABLE} SET migration_name = {standard_literal(new)} "
        f"WHERE migration_name = {standard_literal(old)};"
    )


def shared_timestamp(first: str, second: str, folders: Mapping[int, str]) -> ConfigurationError:
    """The refusal of two folders with one timestamp: rename the one prisma applies second
    (folders sort by name) to the next second no folder has."""
    version = int(first.partition("_")[0])
    later, other = max(first, second), min(first, second)
    free = version + 1
    while free in folders:
        free += 1
    new = f"{free}_{later.partition('_')[2]}"
    passed = [folders[v] for v in sorted(folders) if version < v < free]
    order = (
        f" (it then sorts after {passed[-1]}; if it must run before, renumber that one too)"
        if passed
        else ""
    )
    return ConfigurationError(
        f"prisma folders {first} and {second} share the timestamp {version}, and versions "
        f"here are the folders' timestamps; rename {later} to {new}{order} and, if prisma "
        f"already applied it, its row with it ({row_rename(later, new)}), then run again "
        f"(if this runner applied {later} already, rename {other} to "
        f"{free}_{other.partition('_')[2]} instead)"
    )


def shared_in_ledger(recorded: list[str], files: Mapping[int, str]) -> ConfigurationError | None:
    """None, unless prisma recorded two names of one timestamp (folders renamed as
    ``shared_timestamp`` says, but not their rows): adopting then would take one folder's
    row for the other's and leave the renamed folder to run again."""
    by_version: dict[int, list[str]] = {}
    for name in recorded:
        digits = name.partition("_")[0]
        if digits.isdigit():
            by_version.setdefault(int(digits), []).append(name)
    for version, names in sorted(by_version.items()):
        if len(names) < 2:
            continue
        stale = [name for name in sorted(names) if name != files.get(version)]
        labels = {name.partition("_")[2] for name in stale}
        moved = [f for f in files.values() if f.partition("_")[2] in labels and f not in names]
        if len(stale) == 1 and len(moved) == 1:
            fix = row_rename(stale[0], moved[0])
        else:
            fix = " ".join(row_rename(name, "<its folder's name now>") for name in stale)
        return ConfigurationError(
            f"prisma recorded {' and '.join(sorted(names))} as applied, which share the "
            f"timestamp {version}, and one folder here has it; rename the row of the folder "
            f"you renamed as its folder is named now ({fix}), then adopt again; nothing was "
            "written"
        )
    return None
