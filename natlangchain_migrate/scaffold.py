"""``natlangchain-migrate new NAME``: the next-numbered migration file and its down file;
``new --repeatable NAME``: an ``R__name.sql`` file."""

from __future__ import annotations

import re
from pathlib import Path

from natlangchain_migrate.discovery import REPEATABLE_PREFIX, load_migrations
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.layouts import NATIVE, folder_layout
from natlangchain_migrate.manifest import MANIFEST_NAME, write_manifest
from natlangchain_migrate.versions import next_version

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def new_migration(directory: Path, name: str) -> list[Path]:
    """Write ``NNN_name.sql`` and ``NNN_name.down.sql``; return their paths. In a
    timestamped folder NNN is the current UTC time (YYYYMMDDHHMMSS, padded to the newest
    file's width)."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"migration name {name!r} must be lowercase letters, digits and underscores, "
            "starting with a letter (for example add_user_email)"
        )
    if not directory.is_dir():
        # Never create it: a typo in the path would hide the file where nobody looks.
        raise ConfigurationError(
            f"migrations directory {directory} does not exist; create it first "
            f"(mkdir -p {directory}) or correct --migrations-dir"
        )
    has_files = any(directory.glob("*.sql")) or any(directory.glob("*/migration.sql"))
    existing = load_migrations(directory) if has_files else []
    from natlangchain_migrate.baseline_files import load_baselines

    # A squashed history's newest version may be its baseline file's alone.
    existing = sorted([*existing, *load_baselines(directory)], key=lambda m: m.version)
    width = max(3, len(existing[-1].filename.split("_", 1)[0]) if existing else 3)
    # The folder's style goes on: the next number, or the UTC time in a timestamped one.
    version = next_version([m.version for m in existing], width)
    stem = f"{version:0{width}d}_{name}"
    layout = folder_layout(directory)
    if layout != NATIVE:
        made = _in_layout(directory, layout, version, stem, name)
    else:
        made = _ours(directory, stem)
    if (directory / MANIFEST_NAME).exists():  # keep a manifest the folder already has current
        made.append(write_manifest(directory))
    return made


def _in_layout(directory: Path, layout: str, version: int, stem: str, name: str) -> list[Path]:
    """The new migration as the folder's tool writes it (layouts.py)."""
    sections = {
        "goose": ("-- +goose Up", "-- +goose Down"),
        "dbmate": ("-- migrate:up", "-- migrate:down"),
        "node-pg-migrate": ("-- Up Migration", "-- Down Migration"),
    }
    if layout in sections:
        up, down = sections[layout]
        path = directory / f"{stem}.sql"
        path.write_text(f"{up}\n\n{down}\n\n", encoding="utf-8")
        return [path]
    if layout == "prisma":  # its folder, and the down.sql its docs put beside it
        (directory / stem).mkdir()
        pair = [directory / stem / "migration.sql", directory / stem / "down.sql"]
    elif layout == "flyway":
        pair = [directory / f"V{version}__{name}.sql", directory / f"U{version}__{name}.sql"]
    else:
        pair = [directory / f"{stem}.up.sql", directory / f"{stem}.down.sql"]
    for path in pair:
        path.write_text("", encoding="utf-8")
    return pair


def _ours(directory: Path, stem: str) -> list[Path]:
    up, down = directory / f"{stem}.sql", directory / f"{stem}.down.sql"
    up.write_text(
        f"-- {stem}: describe what this migration does and why.\n"
        "-- Runs in one transaction with its ledger row. For CREATE INDEX CONCURRENTLY,\n"
        "-- make the first line: -- natlangchain: no-transaction\n\n",
        encoding="utf-8",
    )
    down.write_text(f"-- Undoes {stem}.\n\n", encoding="utf-8")
    return [up, down]


def new_repeatable(directory: Path, name: str) -> list[Path]:
    """Write ``R__name.sql`` (no down file: rollback leaves repeatables alone); return it."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"repeatable name {name!r} must be lowercase letters, digits and underscores, "
            "starting with a letter (for example active_users_view)"
        )
    if not directory.is_dir():
        raise ConfigurationError(
            f"migrations directory {directory} does not exist; create it first "
            f"(mkdir -p {directory}) or correct --migrations-dir"
        )
    path = directory / f"{REPEATABLE_PREFIX}{name}.sql"
    if path.exists():
        raise ConfigurationError(f"{path} already exists; edit it, or pick another name")
    path.write_text(
        f"-- R__{name}: the whole current definition, re-applied whenever this file changes.\n"
        "-- Runs after the versioned migrations, in one transaction with its ledger row:\n"
        "-- write CREATE OR REPLACE VIEW / FUNCTION, never a one-time change.\n\n",
        encoding="utf-8",
    )
    made = [path]
    if (directory / MANIFEST_NAME).exists():  # keep a manifest the folder already has current
        made.append(write_manifest(directory))
    return made
