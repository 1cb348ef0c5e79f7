"""A fleet's targets: which databases (one DSN, or a ``--targets`` file of them), which
schemas in each (a LIKE pattern, a query, or one schema), and which of them this shard
owns.

A targets file holds one DSN per line and never a password: ``${VARIABLE}`` references
are expanded from the environment, and libpq's passfile (PGPASSFILE, ~/.pgpass) and
connection service file (``service=name``) work as for any connection. A literal password
is refused naming the file and line, so that the file can live in a repository or a
ConfigMap.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from natlangchain_migrate.dsn import as_url, redact, written_passwords
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.pgservice import ServiceFileError

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Schemas a pattern never matches: the server's own.
SYSTEM_SCHEMA_FILTER = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"


class Database(NamedTuple):
    """One database of the fleet: how to reach it and how to name it in reports."""

    dsn: str
    label: str  # host:port/dbname, no user, no password
    server: str  # host:port: targets on one server share its connection cap


class Target(NamedTuple):
    """One schema of one database: its own ledger and its own advisory lock."""

    database: Database
    schema: str
    id: str  # the name in reports and what --shard hashes

    def in_shard(self, shard: Shard | None) -> bool:
        """Whether this target belongs to ``shard`` (stable: a hash of the id)."""
        if shard is None:
            return True
        digest = hashlib.sha256(self.id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % shard.total == shard.position


class Selection(NamedTuple):
    """Which schemas of each database are targets: those matching ``pattern`` (LIKE), those
    ``query`` returns (one text column), else ``schema`` alone."""

    pattern: str | None = None
    query: str | None = None
    schema: str = "public"


class Shard(NamedTuple):
    """``--shard I/N``: this process takes the targets whose id hashes to I of N (0-based,
    as Kubernetes' JOB_COMPLETION_INDEX)."""

    position: int  # I
    total: int  # N


def parse_shard(text: str) -> Shard:
    """``I/N`` with 0 <= I < N, else a one-line error."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigurationError(
            f"--shard {text!r}: expected I/N with 0 <= I < N, such as 0/4 "
            "(in a Kubernetes indexed Job: $(JOB_COMPLETION_INDEX)/COMPLETIONS)"
        )
    return Shard(int(match[1]), int(match[2]))


def database_of(dsn: str) -> Database:
    """A DSN as a fleet database, named by host, port and database name."""
    parts = urlsplit(as_url(dsn))
    host = parts.hostname or os.environ.get("PGHOST") or "localhost"
    try:
        port = parts.port or int(os.environ.get("PGPORT") or 5432)
    except ValueError:
        port = 5432
    name = parts.path.lstrip("/") or os.environ.get("PGDATABASE") or parts.username or ""
    server = f"{host}:{port}"
    return Database(dsn=dsn, label=f"{server}/{name}", server=server)


def read_targets_file(path: Path) -> list[Database]:
    """The databases a targets file lists: one DSN per line; blank lines and ``#``
    comments skipped; ``${VARIABLE}`` expanded; a literal password refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(
            f"--targets {path}: cannot read it ({error.strerror or error})"
        ) from None
    databases: list[Database] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if _literal_password(line):
            raise ConfigurationError(
                f"{where}: a password is written in the targets file; refer to it as "
                "${VARIABLE} (read from the environment) or use a passfile (PGPASSFILE)"
            )
        dsn = _expand(line, where)
        try:
            database = database_of(dsn)
        except ServiceFileError as error:
            raise ConfigurationError(f"{where}: {error}") from None
        except (ValueError, ConfigurationError):
            raise ConfigurationError(
                f"{where}: not a DSN ({redact(line)}); expected postgresql://user@host:5432/db "
                "or host=... dbname=..."
            ) from None
        if database.label in seen:
            raise ConfigurationError(
                f"{where}: {database.label} is already listed on line {seen[database.label]}"
            )
        seen[database.label] = number
        databases.append(database)
    if not databases:
        raise ConfigurationError(f"--targets {path}: no DSN in it (one per line)")
    return databases


def _literal_password(line: str) -> bool:
    """Whether the line, with its ${...} references taken out, still carries a password
    (a service's, from its file, is not written here)."""
    return any(written_passwords(_REFERENCE.sub("", line)))


def _expand(line: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in os.environ:
            raise ConfigurationError(f"{where}: ${{{name}}} is not set in the environment")
        return os.environ[name]

    return _REFERENCE.sub(value, line)
