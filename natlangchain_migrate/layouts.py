"""Other tools' file layouts, read as they mean them, and the folder's own settings.

A folder is in one layout, detected from its files or named in the folder's
``natlangchain-migrate.toml`` (``layout = "goose"``):

- ``natlangchain``: ``NNN_name.sql`` with ``NNN_name.down.sql`` beside it (discovery.py);
- ``golang-migrate`` and ``sqlx``: ``NNN_name.up.sql`` / ``NNN_name.down.sql``
  (sqlx's ``-- no-transaction`` first line runs the file outside a transaction);
- ``goose``: one file with ``-- +goose Up`` / ``-- +goose Down`` sections;
  ``-- +goose NO TRANSACTION`` is our no-transaction, ``StatementBegin``/``End`` stay
  comments (PostgreSQL's own parser splits statements here, bodies stay whole);
  Go migrations and ``ENVSUB`` cannot be honoured and are refused by name;
- ``dbmate``: ``-- migrate:up`` / ``-- migrate:down`` sections, ``transaction:false``;
- ``flyway``: ``V<n>__desc.sql``, its undo ``U<n>__desc.sql`` and ``R__desc.sql``
  (repeatables.py); ``V<n>__desc.sql.conf`` with ``executeInTransaction=false``.

Nothing here imports the rest of the package: discovery.py (layout_migrations.py for a
folder not in ours) turns what this reads into Migrations.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.versions import parse_version

if TYPE_CHECKING:
    from importlib.abc import Traversable
    from pathlib import Path

SETTINGS_FILE = "natlangchain-migrate.toml"
NATIVE = "natlangchain"
LAYOUTS = (NATIVE, "golang-migrate", "sqlx", "goose", "dbmate", "flyway")
_KEYS = {"layout", "mixed-versions"}

_UP_DOWN = re.compile(r"^(?P<version>\d+)_(?P<label>[^/]+?)\.(?P<dir>up|down)\.sql$")
_SQLX_PLAIN = re.compile(r"^(?P<version>\d+)_(?P<label>[^/]+?)\.sql$")
_LEADING = re.compile(r"^(?P<version>\d+)_?(?P<label>[^/]*?)\.sql$")
_FLYWAY = re.compile(r"^(?P<kind>[VU])(?P<version>[0-9][0-9._]*)__(?P<label>[^/]+)\.sql$")
_GOOSE = re.compile(r"^--\s*\+goose\s+(?P<command>.*?)\s*$")
_DBMATE = re.compile(r"^--\s*migrate:(?P<section>up|down)(?P<options>.*)$")


class FolderSettings(NamedTuple):
    """``natlangchain-migrate.toml`` in the migrations folder (all keys optional)."""

    layout: str | None = None  # None: detected from the files
    mixed_versions: bool = False  # numbered and timestamp versions in one folder


class LayoutFile(NamedTuple):
    """One migration as a layout defines it: what discovery.py needs to make a Migration."""

    version: int
    name: str
    up: Traversable
    up_sql: str
    down: Traversable | None = None
    down_sql: str | None = None
    no_transaction: bool = False


Reader = Callable[["Traversable"], str]


def folder_settings(folder: Traversable) -> FolderSettings:
    """Read the folder's settings file; every key is checked (a misspelt one would
    silently read the folder another way)."""
    entry = folder / SETTINGS_FILE
    if not entry.is_file():
        return FolderSettings()
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
        elif not name.endswith(".sql"):
            continue
        elif "+goose" in text and _has_line(text, _GOOSE):
            marks.setdefault("goose", name)
        elif "migrate:" in text and _has_line(text, _DBMATE):
            marks.setdefault("dbmate", name)
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
        if _maybe_up_file(entry.name) and entry.is_file():
            head = _read_head(entry)
            if whole is not None and head is not None and len(head) < _HEAD_BYTES:
                whole[entry.name] = head
            heads[entry.name] = (head or b"").decode("utf-8", errors="replace")
    return settings.layout or detect_layout(listed, heads)


def folder_layout(directory: Path) -> str:
    """The layout a folder on disk is written in (its settings, else its files)."""
    settings = folder_settings(directory)
    return listed_layout(sorted(directory.iterdir(), key=lambda item: item.name), settings)


_HEAD_BYTES = 64 * 1024


def _read_head(entry: Traversable) -> bytes | None:
    """The start of a file, for the layout marks other tools put at the top (all of it
    when it is shorter than _HEAD_BYTES)."""
    try:
        with entry.open("rb") as stream:
            return stream.read(_HEAD_BYTES)
    except OSError:  # reading it whole says what is wrong, naming the file
        return None


def _maybe_up_file(name: str) -> bool:
    """A file whose text may carry another tool's marks (goose's, dbmate's), or ours."""
    return (
        name[:1].isdigit()
        and name.endswith(".sql")
        and not name.endswith((".down.sql", ".up.sql", ".contract.sql"))
    )


def read_layout(
    layout: str, files: Sequence[Traversable], texts: dict[str, str]
) -> list[LayoutFile]:
    """Every migration of a folder in ``layout`` (not ours), by version."""
    if layout in ("golang-migrate", "sqlx"):
        found = _up_down(files, texts, sqlx=layout == "sqlx")
    elif layout == "goose":
        found = [_goose(entry, texts[entry.name]) for entry in _versioned(files, layout)]
    elif layout == "dbmate":
        found = [_dbmate(entry, texts[entry.name]) for entry in _versioned(files, layout)]
    else:
        found = _flyway(files, texts)
    seen: dict[int, str] = {}
    for item in found:
        if item.version in seen:
            raise ConfigurationError(
                f"{seen[item.version]} and {item.up.name} both have version {item.version}; "
                "renumber one of them"
            )
        seen[item.version] = item.up.name
    return sorted(found, key=lambda item: item.version)


def _has_line(text: str, pattern: re.Pattern[str]) -> bool:
    return "--" in text and any(pattern.match(line.strip()) for line in text.splitlines())


def _versioned(files: Sequence[Traversable], layout: str) -> list[Traversable]:
    """The ``.sql`` files of a goose or dbmate folder; Go migrations refused by name."""
    chosen = []
    for entry in files:
        if layout == "goose" and entry.name.endswith(".go") and entry.name[:1].isdigit():
            raise ConfigurationError(
                f"{entry.name} is a goose Go migration; only SQL migrations can run here. "
                "Rewrite it as SQL (or keep goose for this folder)"
            )
        if entry.name.endswith(".sql") and not entry.name.startswith("R__"):
            if not _LEADING.match(entry.name):
                raise ConfigurationError(
                    f"{entry.name}: {layout} files are named VERSION_name.sql; rename it"
                )
            chosen.append(entry)
    return chosen


def _leading_version(name: str) -> int:
    found = _LEADING.match(name)
    if found is None:
        raise ConfigurationError(f"{name}: name the file VERSION_name.sql")
    return parse_version(name, found["version"])


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


def _goose(entry: Traversable, text: str) -> LayoutFile:
    """Split a goose file at its annotations (goose's sqlparser: lines starting ``-- +goose``)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    no_transaction = False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        found = _GOOSE.match(line.strip())
        if found is None:
            if current is not None:
                current.append(line)
            continue
        command = found["command"]
        if command in ("Up", "Down"):
            if command in sections:
                raise ConfigurationError(
                    f"{entry.name}:{number}: a second '-- +goose {command}'; keep one"
                )
            current = sections.setdefault(command, [])
        elif command == "NO TRANSACTION":
            no_transaction = True
        elif command in ("StatementBegin", "StatementEnd"):
            if current is not None:
                current.append(line)  # a comment here; pglast keeps the statement whole
        elif command.startswith("ENVSUB"):
            raise ConfigurationError(
                f"{entry.name}:{number}: goose's ENVSUB (environment substitution) is not "
                "supported here; write the values into the file"
            )
        else:
            raise ConfigurationError(
                f"{entry.name}:{number}: unknown goose annotation '-- +goose {command}'; "
                "use Up, Down, StatementBegin, StatementEnd or NO TRANSACTION"
            )
    if "Up" not in sections:
        raise ConfigurationError(
            f"{entry.name}: a goose migration needs a '-- +goose Up' line; add it"
        )
    down = sections.get("Down")
    return LayoutFile(
        version=_leading_version(entry.name),
        name=entry.name.removesuffix(".sql"),
        up=entry,
        up_sql="".join(sections["Up"]),
        down=entry if down is not None else None,
        down_sql=_down_with_option("".join(down), "false" if no_transaction else None)
        if down is not None
        else None,
        no_transaction=no_transaction,
    )


def _dbmate(entry: Traversable, text: str) -> LayoutFile:
    """Split a dbmate file at ``-- migrate:up`` / ``-- migrate:down`` (their options after)."""
    sections: dict[str, list[str]] = {}
    options: dict[str, str] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        found = _DBMATE.match(line.strip())
        if found is None:
            if current is not None:
                current.append(line)
            continue
        section = found["section"]
        if section in sections:
            raise ConfigurationError(
                f"{entry.name}:{number}: a second '-- migrate:{section}'; keep one"
            )
        for option in found["options"].split():
            key, _, value = option.partition(":")
            if key != "transaction" or value not in ("true", "false"):
                raise ConfigurationError(
                    f"{entry.name}:{number}: unknown dbmate option {option!r}; dbmate's "
                    "only option is transaction:false"
                )
            options[section] = value
        current = sections.setdefault(section, [])
    if "up" not in sections:
        raise ConfigurationError(f"{entry.name}: a dbmate migration needs '-- migrate:up'")
    down = sections.get("down")
    return LayoutFile(
        version=_leading_version(entry.name),
        name=entry.name.removesuffix(".sql"),
        up=entry,
        up_sql="".join(sections["up"]),
        down=entry if down is not None else None,
        down_sql=_down_with_option("".join(down), options.get("down")) if down else None,
        no_transaction=options.get("up") == "false",
    )


def _down_with_option(sql: str, transaction: str | None) -> str:
    """dbmate's ``transaction:false`` on the down section, as our directive."""
    return f"-- natlangchain: no-transaction\n{sql}" if transaction == "false" else sql


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
