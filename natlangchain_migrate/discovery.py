"""Finding migration files, reading their directives and checksumming them.

Files are named ``NNN_name.sql`` with an optional ``NNN_name.down.sql`` beside
them, and optionally a contract part ``NNN_name.contract.sql`` (with its undo
``NNN_name.contract.down.sql``): what only the new release can live with, run later
by ``contract.py``. The shipped ones are package data, read with importlib.resources so that
the working directory never matters.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from natlangchain_migrate.directives import Directives, parse_directives
from natlangchain_migrate.errors import ConfigurationError, unreadable_file
from natlangchain_migrate.layouts import (
    NATIVE,
    FolderSettings,
    Nested,
    folder_settings,
    listed_layout,
    nested_migrations,
)
from natlangchain_migrate.versions import check_baseline_style, check_styles, parse_version

if TYPE_CHECKING:
    from importlib.abc import Traversable

_UP_FILE = re.compile(r"^(?P<version>\d+)_(?P<label>[A-Za-z0-9_]+)\.sql$")
_DOWN_FILE = re.compile(r"^(?P<version>\d+)_(?P<label>[A-Za-z0-9_]+)\.down\.sql$")
_CONTRACT_FILE = re.compile(
    r"^(?P<version>\d+)_(?P<label>[A-Za-z0-9_]+)\.contract(?P<down>\.down)?\.sql$"
)


# A repeatable migration's file name starts with this (R__name.sql): the one test.
REPEATABLE_PREFIX = "R__"


def is_repeatable_file(name: str) -> bool:
    """Whether a file name is a repeatable migration's (``R__name.sql``)."""
    return name.startswith(REPEATABLE_PREFIX)


# A baseline file's name ends with this (NNN_name.baseline.sql; baseline_files.py).
BASELINE_SUFFIX = ".baseline.sql"


def is_baseline_file(name: str) -> bool:
    """Whether a file name is a baseline file's (``NNN_name.baseline.sql``)."""
    return name.lower().endswith(BASELINE_SUFFIX)


class Migration(NamedTuple):
    """One migration file: its version, name (``001_initial_schema``), SQL and checksum."""

    version: int
    name: str
    filename: str
    sql: str
    checksum: str
    down_file: Traversable | None = None
    directives: Directives = Directives()
    # The contract part (``NNN_name.contract.sql``) and its undo, read when asked.
    contract_file: Traversable | None = None
    contract_down_file: Traversable | None = None
    # A big file, or one with psql-style COPY data: read in pieces when applied
    # (sqlscan.py, streamed.py); its ``sql`` is then empty.
    source: Traversable | None = None
    # Another tool's layout keeps the undo in a section of the file (goose, dbmate).
    down_section: str | None = None
    # A baseline file standing in for the versions it covers (baseline_files.py): those
    # versions' files; None for any other migration.
    baseline_covers: tuple[Migration, ...] | None = None
    # The folder's layout when it is another tool's (layouts.py); None for ours. What a
    # file's BEGIN/COMMIT means depends on it (preflight.py).
    layout: str | None = None

    @property
    def down_sql(self) -> str | None:
        """The down file's SQL, read when asked: only a rollback needs it, and every
        replica's start-up loads the migrations."""
        if self.down_section is not None:
            return self.down_section
        return read_text(self.down_file) if self.down_file is not None else None


def checksum(sql: str) -> str:
    """SHA-256 of the SQL, blind to line endings and trailing whitespace.

    A file re-saved with CRLF or with trailing blanks trimmed is the same
    migration; anything else is a change.
    """
    if "\r" in sql or " \n" in sql or "\t\n" in sql:
        sql = "\n".join(line.rstrip(" \t\r") for line in sql.split("\n"))
    normalized = sql.rstrip("\n \t\r")
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


@functools.cache
def shipped_migrations_dir() -> Traversable:
    """The folder of NatLangChain's own migrations inside the installed package.

    A package installed on disk has it beside this module; importlib.resources
    (which costs a no-op start-up about 13 ms of imports) is needed only for a
    zipped install.
    """
    beside = Path(__file__).with_name("sql")
    if beside.is_dir():
        return beside
    from importlib import resources

    return resources.files("natlangchain_migrate") / "sql"


# Ours, and what other tools' layouts hold: Flyway's .conf, goose's Go and node-pg-migrate's
# JavaScript migrations (refused by name, never skipped).
_LISTED = (".sql", ".conf", ".go", ".js", ".ts", ".cjs", ".mjs", ".cts", ".mts")


def load_migrations(directory: Traversable | Path | str | None = None) -> list[Migration]:
    """Read every ``NNN_name.sql`` in ``directory`` (default: the shipped ones), by version.

    Raises ConfigurationError for a misnamed ``.sql`` file, two files with one
    version, a down file without its migration, or a bad directive.
    """
    folder = shipped_migrations_dir() if directory is None else _as_traversable(directory)
    check_folder(folder)
    settings = folder_settings(folder)
    try:
        entries = list(folder.iterdir())
        listed = sorted(
            [
                *(e for e in entries if e.name.lower().endswith(_LISTED)),
                *nested_migrations(entries),
            ],
            key=lambda item: item.name,
        )
    except OSError as error:
        raise ConfigurationError(
            f"migrations directory {folder}: cannot list it ({error.strerror or error}); "
            "give the runner's user read and search access to it"
        ) from error
    baselines = [entry for entry in listed if is_baseline_file(entry.name)]
    listed = [entry for entry in listed if not is_baseline_file(entry.name)]
    whole: dict[str, bytes] = {}  # the files layout detection read to their end
    layout = listed_layout(listed, settings, whole)
    if layout != NATIVE:  # imported here: it builds on this module's Migration
        from natlangchain_migrate.layout_migrations import from_layout

        return _with_baselines(from_layout(layout, listed, settings), baselines, settings)
    ups: dict[int, Traversable] = {}
    downs: dict[int, Traversable] = {}
    contracts: dict[tuple[int, bool], Traversable] = {}
    for entry in listed:
        name = entry.name  # a Path's name is worked out anew at each use
        if not name.lower().endswith(".sql"):
            continue
        if name not in whole and not entry.is_file():
            continue
        if is_repeatable_file(name):  # repeatables.py reads those
            continue
        if not name.endswith(".sql"):
            raise ConfigurationError(
                f"{name}: migration files end in lowercase .sql; rename it to {name[:-4]}.sql"
            )
        contract = _CONTRACT_FILE.match(name)
        if contract:
            _add_contract(contracts, entry, contract)
            continue
        down = _DOWN_FILE.match(name)
        up = None if down else _UP_FILE.match(name)
        match = down or up
        if match is None:
            raise ConfigurationError(
                f"{name}: migration files must be named NNN_name.sql "
                "(digits, underscore, letters/digits/underscores); rename it"
            )
        version = parse_version(name, match["version"])
        target = downs if down else ups
        if version in target:
            raise ConfigurationError(
                f"{target[version].name} and {name} both have version {version}; "
                "renumber one of them"
            )
        target[version] = entry
    if not ups and not baselines:
        raise ConfigurationError(
            f"no migration files (NNN_name.sql) in {folder}; check --migrations-dir or "
            "NATLANGCHAIN_MIGRATE_DIR"
        )
    check_styles(
        {version: entry.name for version, entry in ups.items()},
        mixed_allowed=settings.mixed_versions,
    )
    for version, entry in downs.items():
        if version not in ups:
            raise ConfigurationError(
                f"{entry.name} has no migration {version} beside it; add it or remove the file"
            )
    for (version, _), entry in contracts.items():
        expand = ups.get(version)
        stem = entry.name.split(".", 1)[0]
        if expand is None or expand.name != f"{stem}.sql":
            beside = f" (version {version} is {expand.name})" if expand else ""
            raise ConfigurationError(
                f"{entry.name} is a contract part without its migration {stem}.sql beside "
                f"it{beside}; add {stem}.sql (the expand part) or rename or remove the file"
            )
    for (version, is_down), entry in contracts.items():
        if is_down and (version, False) not in contracts:
            raise ConfigurationError(
                f"{entry.name} undoes a contract part that is not there; add "
                f"{entry.name.replace('.contract.down.sql', '.contract.sql')} or remove the file"
            )
    migrations = [
        _read_migration(
            version,
            ups[version],
            downs.get(version),
            contracts.get((version, False)),
            contracts.get((version, True)),
            whole.get(ups[version].name),
        )
        for version in sorted(ups)
    ]
    return _with_baselines(migrations, baselines, settings)


def _with_baselines(
    migrations: list[Migration], baselines: list[Traversable], settings: FolderSettings
) -> list[Migration]:
    """The migrations, once each baseline file is found in the folder's version style (a
    misnamed one is left to baseline_files.load_baselines, which names it)."""
    names = {migration.version: migration.filename for migration in migrations}
    for entry in baselines:
        digits = re.match(r"\d+", entry.name)
        if digits is not None:
            version = parse_version(entry.name, digits[0])
            check_baseline_style(entry.name, version, names, mixed_allowed=settings.mixed_versions)
    return migrations


def _add_contract(
    contracts: dict[tuple[int, bool], Traversable], entry: Traversable, found: re.Match[str]
) -> None:
    """File a ``NNN_name.contract[.down].sql`` under its version, refusing a second one."""
    key = (int(found["version"]), found["down"] is not None)
    if key in contracts:
        raise ConfigurationError(
            f"{contracts[key].name} and {entry.name} are both the contract part of version "
            f"{key[0]}; keep one"
        )
    contracts[key] = entry


def _as_traversable(directory: Traversable | Path | str) -> Traversable:
    return Path(directory) if isinstance(directory, str) else directory


def check_folder(folder: Traversable | Path) -> None:
    """Refuse a migrations folder that is missing, a file, or closed to us, naming it."""
    if isinstance(folder, Path):
        if folder.is_file():
            raise ConfigurationError(
                f"migrations directory {folder} is a file, not a folder; pass the folder "
                "that holds the NNN_name.sql files (--migrations-dir, migrations_dir=)"
            )
        if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
            raise ConfigurationError(
                f"migrations directory {folder}: permission denied (the runner's user needs "
                f"read and search access: chmod a+rx {folder})"
            )
    if not folder.is_dir():
        raise ConfigurationError(
            f"migrations directory {folder} does not exist; pass --migrations-dir with a "
            "folder of NNN_name.sql files"
        )


def read_text(entry: Traversable) -> str:
    """A migration file's text, refusing what no SQL file may hold, naming the file."""
    return text_of(entry, None)


def text_of(entry: Traversable, read: bytes | None) -> str:
    """``read_text``, from ``read`` (the file's bytes) when the caller has them."""
    try:
        text = (entry.read_bytes() if read is None else read).decode("utf-8-sig")
        if "\0" in text:  # the server's protocol cannot carry it: it would drop the session
            line = text.count("\n", 0, text.index("\0")) + 1
            raise ConfigurationError(
                f"{entry.name}:{line}: a NUL byte (\\0), which no SQL text may hold; remove "
                "it (a binary value belongs in a bytea literal such as '\\x00')"
            )
        return text
    except OSError as error:
        raise unreadable_file(entry, error) from error
    except UnicodeDecodeError as error:
        raise ConfigurationError(
            f"{entry.name}: not valid UTF-8 at byte {error.start}; save the file as UTF-8"
        ) from error


# A transactional file this big is streamed: read, hashed and sent in pieces
# (benchmarks/data_scale.py measured both sides); smaller ones travel as one message.
STREAM_BYTES = 4 << 20
_HEADER_BYTES = 1 << 16
# A COPY ... FROM stdin at a line's start, after blanks or /* comments */, over up to nine lines
# if written so (psql reads all of these; pg_dump writes the first).
MAYBE_COPY_DATA = re.compile(
    r"^[ \t]*(?:/\*(?:[^*]|\*(?!/))*\*/[ \t]*)*copy\b(?:[^;\n]*\n){0,8}?[^;\n]*?\bfrom\s+stdin\b",
    re.I | re.M,
)


def read_migration_file(version: int, entry: Traversable) -> Migration:
    """One file as a migration of ``version`` (a baseline file's too): big or with COPY
    data, streamed when applied, as any versioned file."""
    return _read_migration(version, entry, None)


def _read_migration(
    version: int,
    up: Traversable,
    down: Traversable | None,
    contract: Traversable | None = None,
    contract_down: Traversable | None = None,
    read: bytes | None = None,
) -> Migration:
    """One migration; ``read`` is its file's bytes when layout detection read it whole
    (then it is not opened again, unless it is big enough to stream)."""
    if read is None or len(read) >= STREAM_BYTES:
        streamed = _streamed(version, up, down, contract, contract_down)
        if streamed is not None:
            return streamed
    sql = read_text(up) if read is None else text_of(up, read)
    if MAYBE_COPY_DATA.search(sql):
        streamed = _streamed(version, up, down, contract, contract_down, small=True)
        if streamed is not None:
            return streamed
    filename = up.name
    return Migration(
        version=version,
        name=filename.removesuffix(".sql"),
        filename=filename,
        sql=sql,
        checksum=checksum(sql),
        down_file=down,
        directives=parse_directives(filename, sql),
        contract_file=contract,
        contract_down_file=contract_down,
    )


class BigMigration(Migration):
    """A big transactional file, streamed when applied, whose checksum is read only when
    something asks for it: applying computes it in the same pass as the statements
    (streamed.py) and records that one; planning needs it only for an applied file (the
    drift check), and a start-up with a matching ``migrations.sum`` not even then."""

    @functools.cached_property
    def checksum(self) -> str:
        from natlangchain_migrate.filesum import survey

        if self.source is None:
            raise TypeError(f"{self.filename} is not a streamed migration")
        return survey(self.source, self.filename).checksum


def _streamed(
    version: int,
    up: Traversable,
    down: Traversable | None,
    contract: Traversable | None,
    contract_down: Traversable | None,
    *,
    small: bool = False,
) -> Migration | None:
    """Our layout's file as a streamed migration, or None (see streamed_migration)."""
    return streamed_migration(
        version,
        up,
        name=up.name.removesuffix(".sql"),
        filename=up.name,
        down=down,
        contract=contract,
        contract_down=contract_down,
        small=small,
    )


def file_size(entry: Traversable) -> int | None:
    """A file's size on disk (prisma's nested one too), or None when it has no path."""
    target = entry.entry if isinstance(entry, Nested) else entry
    return target.stat().st_size if isinstance(target, Path) else None


def streamed_migration(
    version: int,
    up: Traversable,
    *,
    name: str,
    filename: str,
    down: Traversable | None = None,
    contract: Traversable | None = None,
    contract_down: Traversable | None = None,
    small: bool = False,
    layout: str | None = None,
    no_transaction: bool = False,
    size: int | None = None,
) -> Migration | None:
    """The migration to stream, for a transactional file of STREAM_BYTES or more (its
    checksum read when asked: see BigMigration), or one (``small``) whose COPY ... FROM
    stdin sections all end with ``\\.``; else None. Our layout's files and another
    tool's whole up files (layout_migrations.py, ``layout`` and the layout's own
    ``no_transaction`` given) alike, and goose's, dbmate's and node-pg-migrate's up sections
    (``up`` a section_stream.Section, ``size`` its file's); ``filename`` names it in errors."""
    if no_transaction:
        return None
    if not small and (size if size is not None else file_size(up) or 0) < STREAM_BYTES:
        return None
    with up.open("rb") as file:
        head = file.read(_HEADER_BYTES).decode("utf-8-sig", errors="replace")
    directives = parse_directives(filename, head)
    if directives.no_transaction:  # run statement by statement, journalled: read whole
        return None
    migration = Migration(
        version=version,
        name=name,
        filename=filename,
        sql="",
        checksum="",
        down_file=down,
        directives=directives,
        contract_file=contract,
        contract_down_file=contract_down,
        source=up,
        layout=layout,
    )
    if not small:
        return BigMigration(*migration)
    from natlangchain_migrate.filesum import survey

    found = survey(up, filename)
    return migration._replace(checksum=found.checksum) if found.copy_data else None
