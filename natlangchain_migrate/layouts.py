"""Other tools' file layouts, read as they mean them, and the folder's own settings.

A folder is in one layout, detected from its files or named in the folder's
``natlangchain-migrate.toml`` (``layout = "goose"``):

- ``natlangchain``: ``NNN_name.sql`` with ``NNN_name.down.sql`` beside it (discovery.py);
- ``golang-migrate`` and ``sqlx``: ``NNN_name.up.sql`` / ``NNN_name.down.sql``
  (sqlx's ``-- no-transaction`` first line runs the file outside a transaction);
  golang-migrate's and prisma's tools open no transaction (OPENS_NO_TRANSACTION): a file
  wrapped whole in BEGIN; ... COMMIT; runs its body in ours, and a file of one statement
  that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``) runs outside one, as
  those tools run them (layout_migrations.py);
- ``goose``: one file with ``-- +goose Up`` / ``-- +goose Down`` sections;
  ``-- +goose NO TRANSACTION`` is our no-transaction, ``StatementBegin``/``End`` stay
  comments (PostgreSQL's own parser splits statements here, bodies stay whole; a streamed
  up section sends each block as one statement: section_stream.py);
  Go migrations and ``ENVSUB`` cannot be honoured and are refused by name;
- ``dbmate``: ``-- migrate:up`` / ``-- migrate:down`` sections, ``transaction:false``;
- ``node-pg-migrate``: SQL files with ``-- Up Migration`` / ``-- Down Migration`` sections
  (it has no no-transaction marker for SQL); its JavaScript migrations are refused by name;
- ``prisma``: a folder per migration, ``<timestamp>_<name>/migration.sql``, and the
  ``down.sql`` its docs write beside it;
- ``flyway``: ``V<n>__desc.sql``, its undo ``U<n>__desc.sql`` and ``R__desc.sql``
  (repeatables.py); ``V<n>__desc.sql.conf`` with ``executeInTransaction=false``.

layout_sections.py splits the one-file layouts. Nothing here imports the rest of the
package: discovery.py (layout_migrations.py for a folder not in ours) turns what this reads
into Migrations.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.layout_sections import (
    DBMATE_LINE,
    GOOSE_LINE,
    LEADING,
    NODE_PG_MARKER,
    LayoutFile,
    dbmate,
    goose,
    node_pg_migrate,
)
from natlangchain_migrate.prisma_folders import shared_timestamp
from natlangchain_migrate.versions import parse_version

if TYPE_CHECKING:
    from importlib.abc import Traversable

SETTINGS_FILE = "natlangchain-migrate.toml"
NATIVE = "natlangchain"
LAYOUTS = (
    NATIVE,
    "golang-migrate",
    "sqlx",
    "goose",
    "dbmate",
    "node-pg-migrate",
    "flyway",
    "prisma",
)
# The layouts whose tool sends a file as it is, opening no transaction of its own, so that
# its users wrap a file in BEGIN; ... COMMIT; themselves: golang-migrate (database/postgres:
# Run() sends the file in one Exec; its README says to wrap files in BEGIN/COMMIT) and prisma
# (its docs: on PostgreSQL, opt in by adding BEGIN; and COMMIT;). The others open one per
# file (goose's NO TRANSACTION, dbmate's transaction:false, sqlx's -- no-transaction and
# Flyway's executeInTransaction=false turn it off; node-pg-migrate's Migration._apply sends
# BEGIN; before a SQL file and COMMIT; after its ledger row), as this runner does.
OPENS_NO_TRANSACTION = ("golang-migrate", "prisma")
# The layouts whose up migration is a whole file of its own: a big one, or one with COPY
# data sections, is streamed as ours are (layout_migrations.py). goose's, dbmate's and
# node-pg-migrate's files hold up and down sections: their up section is (section_stream.py).
WHOLE_FILE_LAYOUTS = ("golang-migrate", "sqlx", "flyway", "prisma")
# The layouts of one file per migration with up and down sections (layout_sections.py).
SECTIONS = {"goose": goose, "dbmate": dbmate, "node-pg-migrate": node_pg_migrate}
# prisma's migration, read from its folder (layout_migrations.py lists it under this name).
_PRISMA_UP = "/migration.sql"
_PRISMA_DIR = re.compile(r"^(?P<version>\d+)_(?P<label>[^/]+)$")
# node-pg-migrate's JavaScript and TypeScript migrations (src/migrationLoader.ts).
_NODE_PG_SCRIPTS = (".js", ".ts", ".cjs", ".mjs", ".cts", ".mts")
_KEYS = {"layout", "mixed-versions"}

_UP_DOWN = re.compile(r"^(?P<version>\d+)_(?P<label>[^/]+?)\.(?P<dir>up|down)\.sql$")
_SQLX_PLAIN = re.compile(r"^(?P<version>\d+)_(?P<label>[^/]+?)\.sql$")
_FLYWAY = re.compile(r"^(?P<kind>[VU])(?P<version>[0-9][0-9._]*)__(?P<label>[^/]+)\.sql$")


class FolderSettings(NamedTuple):
    """``natlangchain-migrate.toml`` in the migrations folder (all keys optional)."""

    layout: str | None = None  # None: detected from the files
    mixed_versions: bool = False  # numbered and timestamp versions in one folder


Reader = Callable[["Traversable"], str]


class Nested(NamedTuple):
    """A file one folder down (prisma's ``<version>_<name>/migration.sql``), named by its
    path from the migrations folder so that names stay unique."""

    entry: Traversable
    name: str

    def open(self, mode: str = "r", encoding: str | None = None) -> Any:
        return self.entry.open("rb") if mode == "rb" else self.entry.open("r", encoding=encoding)

    def read_text(self, encoding: str | None = None) -> str:
        return self.entry.read_text(encoding)

    def read_bytes(self) -> bytes:
        return self.entry.read_bytes()

    def is_file(self) -> bool:
        return True

    def is_dir(self) -> bool:
        return False

    def __str__(self) -> str:
        return str(self.entry)


def nested_migrations(entries: Sequence[Traversable]) -> list[Traversable]:
    """prisma's ``migration.sql`` and ``down.sql`` in the folders named ``<version>_<name>``."""
    found: list[Traversable] = []
    for entry in entries:
        if (name := entry.name)[:1].isdigit() and "." not in name and entry.is_dir():
            for child in ("migration.sql", "down.sql"):
                if (entry / child).is_file():
                    found.append(Nested(entry / child, f"{name}/{child}"))  # type: ignore[arg-type]
    return found


def folder_settings(folder: Traversable) -> FolderSettings:
    """Read the folder's settings file; every key is checked (a misspelt one would
    silently read the folder another way)."""
    entry = folder / SETTINGS_FILE
    if not entry.is_file():
        return FolderSettings()
    import tomllib  # here: most folders have no settings file, and its import is a few ms

    try:
        table = tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{SETTINGS_FILE}: {error}; fix the file") from None
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigurationError(
            f"{SETTINGS_FILE}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(_KEYS))}"
        )
    layout = table.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigurationError(
            f"{SETTINGS_FILE}: layout {layout!r} is not one of {', '.join(LAYOUTS)}"
        )
    mixed = table.get("mixed-versions", False)
    if not isinstance(mixed, bool):
        raise ConfigurationError(f"{SETTINGS_FILE}: mixed-versions is true or false")
    return FolderSettings(layout, mixed)


def detect_layout(files: Sequence[Traversable], texts: dict[str, str]) -> str:
    """The layout the files are written in; two layouts' marks in one folder are refused."""
    marks: dict[str, str] = {}
    for entry in files:
        name, text = entry.name, texts.get(entry.name, "")
        if name.endswith(".go") and name[:1].isdigit():
            marks.setdefault("goose", name)
        elif name.endswith(_PRISMA_UP):
            marks.setdefault("prisma", name)
        elif "/" in name:  # prisma's down.sql: its text is the team's, not a layout's mark
            continue
        elif name.endswith(_NODE_PG_SCRIPTS) and name[:1].isdigit():
            marks.setdefault("node-pg-migrate", name)
        elif not name.endswith(".sql"):
            continue
        elif "+goose" in text and _has_line(text, GOOSE_LINE):
            marks.setdefault("goose", name)
        elif "migrate:" in text and _has_line(text, DBMATE_LINE):
            marks.setdefault("dbmate", name)
        elif "igration" in text and _has_line(text, NODE_PG_MARKER):
            marks.setdefault("node-pg-migrate", name)
        elif name.endswith(".up.sql") and _UP_DOWN.match(name):  # .down.sql is ours too
            marks.setdefault("golang-migrate", name)
        elif _FLYWAY.match(name):
            marks.setdefault("flyway", name)
    if len(marks) > 1:
        (first, one), (second, other) = list(marks.items())[:2]
        raise ConfigurationError(
            f"{one} is written for {first} and {other} for {second}; keep one layout per "
            f"folder, or name it with layout = ... in {SETTINGS_FILE}"
        )
    return next(iter(marks), NATIVE)


def listed_layout(
    listed: Sequence[Traversable],
    settings: FolderSettings,
    whole: dict[str, bytes] | None = None,
) -> str:
    """The layout of a folder's listed files: its settings' ``layout``, else detected.

    goose's and dbmate's marks open their files: a head of each is enough to tell the
    layout, and a big file is not read whole here (it is streamed when applied). A file
    the head holds to its end goes into ``whole``, so the caller does not read it again.
    """
    heads: dict[str, str] = {}
    for entry in listed:
        if _maybe_up_file(name := entry.name) and (head := _read_head(entry)) is not None:
            if whole is not None and len(head) < HEAD_BYTES:
                whole[name] = head
            heads[name] = head.decode("utf-8", errors="replace")
    return settings.layout or detect_layout(listed, heads)


def folder_layout(directory: Path) -> str:
    """The layout a folder on disk is written in (its settings, else its files)."""
    settings = folder_settings(directory)
    entries: list[Traversable] = list(directory.iterdir())
    listed = sorted([*entries, *nested_migrations(entries)], key=lambda item: item.name)
    return listed_layout(listed, settings)


HEAD_BYTES = 64 * 1024


def _read_head(entry: Traversable) -> bytes | None:
    """The start of a regular file (all of it when shorter than HEAD_BYTES), else None (a
    whole read names what is wrong); on disk an open and fstat, not stat and buffered I/O."""
    try:
        if not isinstance(entry, Path):  # a zipped package's, or prisma's nested file
            if not entry.is_file():
                return None
            with entry.open("rb") as stream:
                return stream.read(HEAD_BYTES)
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO never waits
    except OSError:
        return None
    try:
        head = os.read(fd, HEAD_BYTES) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        while head and len(head) < HEAD_BYTES and (more := os.read(fd, HEAD_BYTES - len(head))):
            head += more
        return head
    except OSError:
        return None
    finally:
        os.close(fd)


def _maybe_up_file(name: str) -> bool:
    """A file whose text may carry another tool's marks (goose's, dbmate's), or ours."""
    return (
        name[:1].isdigit()
        and name.endswith(".sql")
        and not name.endswith((".down.sql", ".up.sql", ".contract.sql"))
    )


def read_layout(
    layout: str,
    files: Sequence[Traversable],
    texts: dict[str, str],
    split: dict[str, LayoutFile] | None = None,
) -> list[LayoutFile]:
    """Every migration of a folder in ``layout`` (not ours), by version; ``split`` holds
    the goose, dbmate or node-pg-migrate files already split without reading them whole
    (section_stream.py), by name."""
    if layout in ("golang-migrate", "sqlx"):
        found = _up_down(files, texts, sqlx=layout == "sqlx")
    elif layout in SECTIONS:
        found = [
            (split or {}).get(entry.name) or SECTIONS[layout](entry, texts[entry.name])
            for entry in _versioned(files, layout)
        ]
    elif layout == "prisma":
        found = _prisma(files, texts)
    else:
        found = _flyway(files, texts)
    seen: dict[int, LayoutFile] = {}
    for item in found:
        if item.version in seen:
            if layout == "prisma":
                folders = {f.version: f.name for f in found}
                raise shared_timestamp(seen[item.version].name, item.name, folders)
            raise ConfigurationError(
                f"{seen[item.version].up.name} and {item.up.name} both have version "
                f"{item.version}; renumber one of them"
            )
        seen[item.version] = item
    return sorted(found, key=lambda item: item.version)


def _has_line(text: str, pattern: re.Pattern[str]) -> bool:
    return "--" in text and any(pattern.match(line.strip()) for line in text.splitlines())


def _versioned(files: Sequence[Traversable], layout: str) -> list[Traversable]:
    """The ``.sql`` files of a goose, dbmate or node-pg-migrate folder; Go and JavaScript
    migrations refused by name."""
    chosen = []
    for entry in files:
        if layout == "goose" and entry.name.endswith(".go") and entry.name[:1].isdigit():
            raise ConfigurationError(
                f"{entry.name} is a goose Go migration; only SQL migrations can run here. "
                "Rewrite it as SQL (or keep goose for this folder)"
            )
        if layout == "node-pg-migrate" and entry.name.endswith(_NODE_PG_SCRIPTS):
            raise ConfigurationError(
                f"{entry.name} is a node-pg-migrate JavaScript migration; only SQL migrations "
                "can run here. Rewrite it as SQL (-- Up Migration / -- Down Migration)"
            )
        if entry.name.endswith(".sql") and not entry.name.startswith("R__"):
            if not LEADING.match(entry.name):
                raise ConfigurationError(
                    f"{entry.name}: {layout} files are named VERSION_name.sql; rename it"
                )
            chosen.append(entry)
    return chosen


def _up_down(
    files: Sequence[Traversable], texts: dict[str, str], *, sqlx: bool
) -> list[LayoutFile]:
    ups: dict[int, Traversable] = {}
    downs: dict[int, Traversable] = {}
    for entry in files:
        if not entry.name.endswith(".sql") or entry.name.startswith("R__"):
            continue
        found = _UP_DOWN.match(entry.name)
        plain = None if found else _SQLX_PLAIN.match(entry.name)
        if found is None and not (sqlx and plain):
            raise ConfigurationError(
                f"{entry.name}: golang-migrate and sqlx files are named "
                "VERSION_name.up.sql and VERSION_name.down.sql; rename it"
            )
        digits = found["version"] if found else plain["version"] if plain else ""
        target = downs if found and found["dir"] == "down" else ups
        version = parse_version(entry.name, digits)
        if version in target:
            raise ConfigurationError(
                f"{target[version].name} and {entry.name} both have version {version}; "
                "renumber one of them"
            )
        target[version] = entry
    for version, entry in downs.items():
        if version not in ups:
            raise ConfigurationError(
                f"{entry.name} has no up file of version {version} beside it; add it or "
                "remove the file"
            )
    made = []
    for version, up in ups.items():
        text = texts[up.name]
        label = up.name.removesuffix(".sql").removesuffix(".up")
        down = downs.get(version)
        made.append(
            LayoutFile(
                version=version,
                name=label,
                up=up,
                up_sql=text,
                down=down,
                down_sql=texts[down.name] if down is not None else None,
                no_transaction=text.lstrip().startswith("-- no-transaction"),
            )
        )
    return made


def _flyway(files: Sequence[Traversable], texts: dict[str, str]) -> list[LayoutFile]:
    ups: dict[int, Traversable] = {}
    undos: dict[int, Traversable] = {}
    confs = {entry.name for entry in files if entry.name.endswith(".sql.conf")}
    for entry in files:
        if not entry.name.endswith(".sql") or entry.name.startswith("R__"):
            continue
        found = _FLYWAY.match(entry.name)
        if found is None:
            raise ConfigurationError(
                f"{entry.name}: Flyway files are named V<version>__desc.sql, "
                "U<version>__desc.sql or R__desc.sql; rename it"
            )
        if not found["version"].isdigit():
            raise ConfigurationError(
                f"{entry.name}: Flyway's dotted version {found['version']} has no single "
                "number here; rename the files with whole-number versions (V1__, V2__, ...)"
            )
        target = undos if found["kind"] == "U" else ups
        target[parse_version(entry.name, found["version"])] = entry
    made = []
    for version, up in ups.items():
        undo = undos.get(version)
        conf = f"{up.name}.conf"
        in_transaction = True
        if conf in confs:
            text = texts.get(conf, "")
            in_transaction = "executeInTransaction=false" not in text.replace(" ", "")
        made.append(
            LayoutFile(
                version=version,
                name=up.name.removesuffix(".sql"),
                up=up,
                up_sql=texts[up.name],
                down=undo,
                down_sql=texts[undo.name] if undo is not None else None,
                no_transaction=not in_transaction,
            )
        )
    for version, undo in undos.items():
        if version not in ups:
            raise ConfigurationError(
                f"{undo.name} undoes version {version}, which has no V file; add it or "
                "remove the file"
            )
    return made


def _prisma(files: Sequence[Traversable], texts: dict[str, str]) -> list[LayoutFile]:
    """prisma's folders: ``<version>_<name>/migration.sql`` (listed by that name), and
    ``down.sql`` beside it when the team wrote one (prisma's docs on down migrations)."""
    made = []
    for entry in files:
        if not entry.name.endswith(_PRISMA_UP):
            if entry.name.endswith(".sql") and "/" not in entry.name:
                raise ConfigurationError(
                    f"{entry.name}: a prisma folder holds one folder per migration "
                    "(<timestamp>_<name>/migration.sql); move the file into one"
                )
            continue
        folder = entry.name.removesuffix(_PRISMA_UP)
        found = _PRISMA_DIR.match(folder)
        if found is None:
            raise ConfigurationError(
                f"{entry.name}: prisma migration folders are named <timestamp>_<name>; rename it"
            )
        down_name = f"{folder}/down.sql"
        down = next((e for e in files if e.name == down_name), None)
        made.append(
            LayoutFile(
                version=parse_version(entry.name, found["version"]),
                name=folder,
                up=entry,
                up_sql=texts[entry.name],
                down=down,
                down_sql=texts[down_name] if down is not None else None,
                filename=entry.name,
            )
        )
    return made
