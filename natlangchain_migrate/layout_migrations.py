"""A folder in another tool's layout (layouts.py reads it) as Migrations.

Apart from discovery.py, which imports this only for such a folder: the native layout's
start-up does not pay for it. discovery's functions are reached through the module, so
whatever reads files there (a test's spy too) reads them here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natlangchain_migrate import discovery
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.layouts import FolderSettings, LayoutFile, read_layout
from natlangchain_migrate.versions import check_styles

if TYPE_CHECKING:
    from importlib.abc import Traversable


def from_layout(
    layout: str, listed: list[Traversable], settings: FolderSettings
) -> list[discovery.Migration]:
    """A folder in another tool's layout (layouts.py), as Migrations."""
    files = [entry for entry in listed if entry.is_file()]
    texts = {
        entry.name: discovery.read_text(entry) for entry in files if not entry.name.endswith(".go")
    }
    found = read_layout(layout, files, texts)
    if not found:
        raise ConfigurationError(
            f"no {layout} migration files in the folder; check --migrations-dir"
        )
    check_styles({f.version: f.up.name for f in found}, mixed_allowed=settings.mixed_versions)
    return [_layout_migration(item) for item in found]


def _layout_migration(item: LayoutFile) -> discovery.Migration:
    directives = discovery.parse_directives(item.up.name, item.up_sql)
    if item.no_transaction:
        directives = directives._replace(no_transaction=True)
    single_file = item.down is item.up
    return discovery.Migration(
        version=item.version,
        name=item.name,
        filename=item.up.name,
        sql=item.up_sql,
        checksum=discovery.checksum(item.up_sql),
        down_file=item.down,
        directives=directives,
        down_section=item.down_sql if single_file else None,
    )
