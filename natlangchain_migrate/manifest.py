"""The checksum manifest, ``migrations.sum``: how an up-to-date start-up proves the files
unchanged without reading a thousand of them.

Without it, every start-up reads and hashes every migration file (about 20 µs each),
so its cost grows with the project's history. With it, a start-up lists the folder,
compares each ``.sql`` file's name and size with the manifest, and sends one query
that compares a digest of the ledger's (version, checksum) pairs with the manifest's.
Equal means nothing is pending and nothing applied has drifted, as far as the
manifest can tell; anything else (a new, removed, renamed or resized file, a ledger
that differs) falls back to reading every file, exactly as without a manifest.

What this leaves: a file edited in place to the same size, with nothing pending, is
not read at start-up. ``--check``, ``--status``, any run with work to do, and
``natlangchain-migrate sum --check`` (for CI) hash every file and catch it.

The format is one line per ``.sql`` file: ``<sha256>  <size>  <filename>``, sorted by
name, under a comment that says how to regenerate it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from natlangchain_migrate.errors import ConfigurationError

if TYPE_CHECKING:
    from importlib.abc import Traversable

MANIFEST_NAME = "migrations.sum"
_HEADER = (
    "# natlangchain-migrate checksum manifest: lets an up-to-date start-up skip reading\n"
    "# every file. Regenerate after any change: natlangchain-migrate sum --migrations-dir DIR\n"
)


class ManifestEntry(NamedTuple):
    """One ``.sql`` file as the manifest records it."""

    filename: str
    size: int
    checksum: str
    version: int | None  # None for a repeatable (R__name.sql)

    @property
    def is_down(self) -> bool:
        return self.filename.endswith(".down.sql")

    @property
    def is_baseline(self) -> bool:
        """A baseline file (``NNN_name.baseline.sql``): not an up file, yet its edits count."""
        return self.filename.endswith(".baseline.sql")

    @property
    def is_contract(self) -> bool:
        """A contract part (``NNN_name.contract.sql``): not an up file, yet its edits count."""
        return self.filename.endswith(".contract.sql")


class Manifest(NamedTuple):
    """What the manifest says, precomputed once per manifest file: the up files in
    version order, every ``.sql`` name, and the ledger digest they imply."""

    folder: Path
    ups: list[ManifestEntry]
    names: frozenset[str]
    # The up files and the contract parts: those whose size the fast path compares.
    sized: list[ManifestEntry]
    versions: list[int]
    ledger_digest: str  # what ``Ledger.digest`` returns when every file is applied, unchanged

    @classmethod
    def of(cls, folder: Path, entries: list[ManifestEntry]) -> Manifest:
        ups = sorted(
            (
                entry
                for entry in entries
                if not entry.is_down and not entry.is_contract and not entry.is_baseline
            ),
            key=lambda e: e.version or 0,
        )
        baselines = sorted((e for e in entries if e.is_baseline), key=lambda e: e.version or 0)
        rows = list(ups)
        # A baseline file whose own version has no file here wrote that version's row,
        # with its checksum (baseline_files.ledger_rows).
        if baselines and all(entry.version != baselines[-1].version for entry in ups):
            rows = sorted([*ups, baselines[-1]], key=lambda e: e.version or 0)
        text = ",".join(f"{entry.version}:{entry.checksum}:true" for entry in rows)
        return cls(
            folder=folder,
            ups=ups,
            names=frozenset(entry.filename for entry in entries),
            sized=ups + [entry for entry in entries if entry.is_contract or entry.is_baseline],
            versions=[entry.version for entry in rows if entry.version is not None],
            ledger_digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )


# Parsed manifests by (path, mtime, size): a process that checks again pays for a stat.
_parsed: dict[tuple[str, int, int], Manifest | None] = {}


def write_manifest(directory: Path | str) -> Path:
    """Write ``migrations.sum`` for every ``.sql`` file in ``directory`` (atomically)."""
    from natlangchain_migrate.discovery import load_migrations

    folder = Path(directory)
    load_migrations(folder)  # refuse to vouch for a folder the runner would refuse
    lines = []
    for path in _sql_files(folder):
        lines.append(f"{_checksum(path)}  {path.stat().st_size}  {path.name}\n")
    target = folder / MANIFEST_NAME
    partial = folder / f".{MANIFEST_NAME}.tmp"
    partial.write_text(_HEADER + "".join(lines), encoding="utf-8")
    partial.replace(target)
    return target


def _checksum(path: Path) -> str:
    """A file's checksum, read in chunks: a 1 GB seed file needs no 1 GB of memory."""
    from natlangchain_migrate.filesum import survey

    return survey(path, path.name).checksum


def stale_files(directory: Path | str) -> list[str]:
    """The files whose content, size or presence the manifest gets wrong (read in full)."""
    folder = Path(directory)
    recorded = {entry.filename: entry for entry in _read_entries(folder) or []}
    wrong = []
    for path in _sql_files(folder):
        entry = recorded.pop(path.name, None)
        if entry is None or entry.checksum != _checksum(path):
            wrong.append(path.name)
    return wrong + sorted(recorded)


def current_manifest(directory: Traversable | Path | str | None) -> Manifest | None:
    """The manifest, if there is one and the folder's ``.sql`` names, and its up files'
    sizes, match it. Costs a directory listing and a stat per up file; reads no migration.
    """
    manifest = recorded_manifest(directory)
    if manifest is None or not folder_matches(manifest):
        return None
    return manifest


def recorded_manifest(directory: Traversable | Path | str | None) -> Manifest | None:
    """What ``migrations.sum`` says (parsed once per process and manifest file), without
    looking at the files; None without one, or for a zipped package."""
    from natlangchain_migrate.discovery import shipped_migrations_dir

    folder = shipped_migrations_dir() if directory is None else directory
    if not isinstance(folder, Path | str):
        return None  # a zipped package: nothing to stat, read the files
    return _manifest_in(Path(folder))


def folder_matches(manifest: Manifest) -> bool:
    """Whether the folder's ``.sql`` names, and its up files' and contract parts' sizes, are
    the manifest's: a listing and a stat per such file (the runner does it while it connects)."""
    try:
        with os.scandir(manifest.folder) as listing:
            found = {
                item.name: item
                for item in listing
                if item.name.lower().endswith(".sql") and item.is_file()
            }
        if found.keys() != manifest.names:
            return False
        return all(found[entry.filename].stat().st_size == entry.size for entry in manifest.sized)
    except OSError:
        return False


def _sql_files(folder: Path) -> list[Path]:
    """The folder's ``.sql`` files (a folder named ``004_x.sql`` is no migration)."""
    return sorted((p for p in folder.glob("*.sql") if p.is_file()), key=lambda p: p.name)


def _manifest_in(folder: Path) -> Manifest | None:
    path = _manifest_path(folder)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        from natlangchain_migrate.discovery import check_folder

        check_folder(folder)  # a file, or a folder closed to us: named as such
        raise ConfigurationError(f"{path}: cannot read it: {error}") from error
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _parsed:
        entries = _read_entries(folder)
        # The fast path compares versioned files only: a folder with repeatables (whose
        # ledger is another table) reads every file.
        usable = entries is not None and all(entry.version is not None for entry in entries)
        _parsed[key] = Manifest.of(folder, entries) if usable and entries else None
    return _parsed[key]


@functools.lru_cache(maxsize=64)
def _manifest_path(folder: Path) -> Path:
    return folder / MANIFEST_NAME


def _read_entries(folder: Path) -> list[ManifestEntry] | None:
    try:
        text = (folder / MANIFEST_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigurationError(f"{folder / MANIFEST_NAME}: cannot read it: {error}") from error
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("  ")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[0]) != 64:
            raise ConfigurationError(
                f"{MANIFEST_NAME}:{number}: expected '<sha256>  <size>  <file>'; regenerate "
                "it with: natlangchain-migrate sum --migrations-dir DIR"
            )
        prefix = parts[2].split("_", 1)[0]
        version = int(prefix) if prefix.isdigit() else None
        entries.append(ManifestEntry(parts[2], int(parts[1]), parts[0], version))
    return entries
