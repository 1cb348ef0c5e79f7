"""A folder in another tool's layout (layouts.py reads it) as Migrations.

Apart from discovery.py, which imports this only for such a folder: the native layout's
start-up does not pay for it. discovery's functions are reached through the module, so
whatever reads files there (a test's spy too) reads them here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from natlangchain_migrate import discovery
from natlangchain_migrate.directives import Directives, parse_directives
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.layout_sections import LayoutFile
from natlangchain_migrate.layouts import (
    HEAD_BYTES,
    OPENS_NO_TRANSACTION,
    SECTIONS,
    WHOLE_FILE_LAYOUTS,
    FolderSettings,
    read_layout,
)
from natlangchain_migrate.section_stream import Section, split_file
from natlangchain_migrate.versions import check_styles

if TYPE_CHECKING:
    from importlib.abc import Traversable


def from_layout(
    layout: str, listed: list[Traversable], settings: FolderSettings
) -> list[discovery.Migration]:
    """A folder in another tool's layout (layouts.py), as Migrations."""
    files = [entry for entry in listed if entry.is_file()]
    big = {
        entry.name
        for entry in files
        if layout in (*WHOLE_FILE_LAYOUTS, *SECTIONS)
        and _may_stream(layout, entry.name)
        and (discovery.file_size(entry) or 0) >= discovery.STREAM_BYTES
    }
    split = _split_big(layout, files, big)
    texts = {
        entry.name: _head(entry) if entry.name in big else discovery.read_text(entry)
        for entry in files
        if entry.name.endswith((".sql", ".conf")) and entry.name not in split
    }
    found = read_layout(layout, files, texts, split)
    if not found:
        raise ConfigurationError(
            f"no {layout} migration files in the folder; check --migrations-dir"
        )
    check_styles({f.version: f.up.name for f in found}, mixed_allowed=settings.mixed_versions)
    return [_layout_migration(layout, item, item.up.name in big) for item in found]


def _split_big(layout: str, files: list[Traversable], big: set[str]) -> dict[str, LayoutFile]:
    """The big goose, dbmate and node-pg-migrate files split by a scan in chunks, by name;
    one that runs without a transaction leaves ``big`` and is read whole."""
    if layout not in SECTIONS:
        return {}
    split = {}
    for entry in files:
        if entry.name in big:
            item = split_file(layout, entry)
            if item is None:
                big.discard(entry.name)
            else:
                split[entry.name] = item
    return split


def _may_stream(layout: str, name: str) -> bool:
    """An up file of a layout whose up migration is a whole file (down files, Flyway's
    undo and repeatable files are read whole, as ever)."""
    if layout == "prisma":
        return name.endswith("/migration.sql")
    if layout == "flyway":
        return name.startswith("V") and name.endswith(".sql")
    return name.endswith(".sql") and not name.endswith(".down.sql") and "R__" not in name


def _head(entry: Traversable) -> str:
    """The start of a big file: enough for its directives and sqlx's first-line marker."""
    with entry.open("rb") as file:
        return file.read(HEAD_BYTES).decode("utf-8-sig", errors="replace")


def _streamed(layout: str, item: LayoutFile, *, big: bool) -> discovery.Migration | None:
    """A whole up file streamed as one of ours is (discovery.streamed_migration): one of
    STREAM_BYTES or more, or one whose COPY data sections all end with ``\\.``."""
    if layout not in WHOLE_FILE_LAYOUTS or item.no_transaction:
        return None
    if not big and not discovery.MAYBE_COPY_DATA.search(item.up_sql):
        return None
    return discovery.streamed_migration(
        item.version,
        item.up,
        name=item.name,
        filename=item.filename or item.up.name,
        down=item.down,
        small=not big,
        layout=layout,
    )


def _sectioned(layout: str, item: LayoutFile, *, big: bool) -> discovery.Migration | None:
    """A goose, dbmate or node-pg-migrate up section streamed (section_stream.py): split
    in chunks when the file is big, or read whole with COPY data sections that all end
    with ``\\.``; else None."""
    if not big:
        if item.no_transaction or not discovery.MAYBE_COPY_DATA.search(item.up_sql):
            return None
        split = split_file(layout, item.up)
        if split is None:
            return None
        item = split
    if not isinstance(item.up, Section):
        return None
    return discovery.streamed_migration(
        item.version,
        item.up,
        name=item.name,
        filename=item.up.name,
        down=item.down,
        small=not big,
        layout=layout,
        size=discovery.file_size(item.up.entry),
    )


def _layout_migration(layout: str, item: LayoutFile, big: bool) -> discovery.Migration:
    if layout in SECTIONS:
        streamed = _sectioned(layout, item, big=big)
        if streamed is not None:
            return streamed
        if big and isinstance(item.up, Section):  # a no-transaction directive: read whole
            item = SECTIONS[layout](item.up.entry, discovery.read_text(item.up.entry))
            big = False
    streamed = _streamed(layout, item, big=big)
    if streamed is not None:
        return streamed
    if big:  # a no-transaction file runs statement by statement, journalled: read whole
        item = item._replace(up_sql=discovery.read_text(item.up))
    filename = item.filename or item.up.name
    directives = parse_directives(filename, item.up_sql)
    if item.no_transaction:
        directives = directives._replace(no_transaction=True)
    sql, directives = as_the_tool_runs(layout, filename, item.up_run or item.up_sql, directives)
    single_file = item.down is item.up
    return discovery.Migration(
        version=item.version,
        name=item.name,
        filename=filename,
        sql=sql,
        checksum=discovery.checksum(item.up_sql),  # the file's own text, wrapper and all
        down_file=item.down,
        directives=directives,
        down_section=item.down_sql if single_file else None,
        layout=layout,
    )


def as_the_tool_runs(
    layout: str | None, filename: str, sql: str, directives: Directives
) -> tuple[str, Directives]:
    """What the runner sends for a file (up or down) of a tool that opens no transaction
    (golang-migrate, prisma), and how: such a tool sends the file in one batch, so

    - a file wrapped whole in ``BEGIN;`` ... ``COMMIT;`` is one transaction there: here its
      body runs in the runner's transaction with the ledger row (the wrapper blanked out,
      lines and columns kept; the checksum stays the file's);
    - a file of one statement that PostgreSQL refuses in a transaction (``CREATE INDEX
      CONCURRENTLY``) runs outside one there, and so here.

    Any other layout's file, and anything else, is returned as it is.
    """
    if (
        layout not in OPENS_NO_TRANSACTION
        or directives.no_transaction
        or directives.backfill is not None  # its :lo/:hi are no SQL yet; it runs in batches
    ):
        return sql, directives
    from natlangchain_migrate.statements import split_statements, unwrap_transaction

    body = unwrap_transaction(sql)
    if body is not None:
        return body, directives
    if _MAYBE_ALONE.search(sql):
        statements = split_statements(filename, sql)
        if len(statements) == 1 and statements[0].autocommit:
            return sql, directives._replace(no_transaction=True)
    return sql, directives


# A cheap look for the statements that refuse a transaction (CREATE INDEX CONCURRENTLY,
# VACUUM, ...), so that an ordinary file is not parsed at every start-up: whole words only,
# since names such as system_locks or database_url hold them too.
_MAYBE_ALONE = re.compile(
    r"\b(?:concurrently|vacuum|reindex|cluster|database|tablespace|system|subscription|discard)\b",
    re.I,
)
