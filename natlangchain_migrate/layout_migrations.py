"""A folder in another tool's layout (layouts.py reads it) as Migrations.

Apart from discovery.py, which imports this only for such a folder: the native layout's
start-up does not pay for it. discovery's functions are reached through the module, so
whatever reads files there (a test's spy too) reads them here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natlangchain_migrate import discovery
from natlangchain_migrate.directives import Directives, parse_directives
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.layout_sections import LayoutFile
from natlangchain_migrate.layouts import FolderSettings, read_layout
from natlangchain_migrate.versions import check_styles

if TYPE_CHECKING:
    from importlib.abc import Traversable


def from_layout(
    layout: str, listed: list[Traversable], settings: FolderSettings
) -> list[discovery.Migration]:
    """A folder in another tool's layout (layouts.py), as Migrations."""
    files = [entry for entry in listed if entry.is_file()]
    texts = {
        entry.name: discovery.read_text(entry)
        for entry in files
        if entry.name.endswith((".sql", ".conf"))
    }
    found = read_layout(layout, files, texts)
    if not found:
        raise ConfigurationError(
            f"no {layout} migration files in the folder; check --migrations-dir"
        )
    check_styles({f.version: f.up.name for f in found}, mixed_allowed=settings.mixed_versions)
    return [_layout_migration(item) for item in found]


def _layout_migration(item: LayoutFile) -> discovery.Migration:
    filename = item.filename or item.up.name
    directives = parse_directives(filename, item.up_sql)
    if item.no_transaction or _runs_alone(filename, item, directives):
        directives = directives._replace(no_transaction=True)
    single_file = item.down is item.up
    return discovery.Migration(
        version=item.version,
        name=item.name,
        filename=filename,
        sql=item.up_sql,
        checksum=discovery.checksum(item.up_sql),
        down_file=item.down,
        directives=directives,
        down_section=item.down_sql if single_file else None,
    )


def _runs_alone(filename: str, item: LayoutFile, directives: Directives) -> bool:
    """prisma sends a file as one batch: a file of one statement that PostgreSQL refuses in
    a transaction (``CREATE INDEX CONCURRENTLY``) runs outside one there, and so here. A
    backfill (its ``:lo``/``:hi`` are no SQL yet) runs in batches of its own."""
    if item.filename is None or directives.no_transaction or directives.backfill is not None:
        return False
    from natlangchain_migrate.statements import split_statements

    statements = split_statements(filename, item.up_sql)
    return len(statements) == 1 and statements[0].autocommit
