"""libpq's conventions, as psql, pg_dump and asyncpg honour them: the PG* environment,
where a run's connection settings came from, what a TLS failure needs, and the URL
spellings of other drivers that a user may paste.

With no DSN and no DATABASE_URL, a PGHOST, PGHOSTADDR, PGPORT, PGDATABASE or PGSERVICE
in the environment names the server (never the embedded one); asyncpg then reads PGHOST,
PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, PGSSLMODE and the PGSSL* files
itself, as libpq does, and pgservice reads the service file it does not.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from natlangchain_migrate.errors import ConfigurationError

if TYPE_CHECKING:
    from natlangchain_migrate.pgservice import Service

# The DSN that leaves every setting to the PG* environment (asyncpg fills each part).
ENVIRONMENT_DSN = "postgresql://"

# Variables that say where to connect: any of them means "that server".
_WHERE = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE")
# What the log may show of the environment (never PGPASSWORD's value).
_SHOWN = (
    "PGSERVICE",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSSLMODE",
    "PGPASSFILE",
)

_sources: dict[str, str] = {}


def names_a_server() -> bool:
    """True when the PG* environment says where to connect."""
    return any(os.environ.get(name) for name in _WHERE)


def remember_source(dsn: str, source: str) -> None:
    """Record where a DSN came from (the CLI's embedded server), for the log line."""
    _sources[dsn] = source


def forget_source(dsn: str) -> None:
    """Forget a recorded DSN (a scratch database's, once dropped)."""
    _sources.pop(dsn, None)


def source_of(dsn: str) -> str:
    """Where the connection settings came from, as the ``connecting`` log says, with the
    connection service and its file when one fills them in."""
    if dsn in _sources:
        return _sources[dsn]
    if dsn == ENVIRONMENT_DSN:
        source = "PG* environment"
    elif dsn == os.environ.get("DATABASE_URL"):
        source = "DATABASE_URL"
    else:
        source = "--database-url or dsn="
    service = _service(dsn)
    return source if service is None else f"{source}, {service.shown()}"


def _service(dsn: str) -> Service | None:
    """The DSN's connection service; an unreadable DSN has none (connecting says why)."""
    from natlangchain_migrate.dsn import service_of
    from natlangchain_migrate.pgservice import ServiceFileError

    try:
        return service_of(dsn)
    except ServiceFileError:
        raise
    except (ValueError, ConfigurationError):
        return None


def environment_shown() -> dict[str, str]:
    """The PG* settings in effect, without the password."""
    shown = {name: os.environ[name] for name in _SHOWN if os.environ.get(name)}
    if os.environ.get("PGPASSWORD"):
        shown["PGPASSWORD"] = "***"
    return shown


def describe(dsn: str) -> str:
    """How errors name the target: the PG* settings for the environment DSN; with a
    connection service, the URL it gives (its password hidden) and the service."""
    from natlangchain_migrate.dsn import as_url, redact

    service = _service(dsn)
    if service is not None:
        return f"{redact(as_url(dsn))} from {service.shown()}"
    if dsn != ENVIRONMENT_DSN:
        return redact(dsn)
    shown = " ".join(f"{key}={value}" for key, value in environment_shown().items())
    return f"the server of the PG* environment ({shown})"


# Other drivers' spellings, with what to change.
_FOREIGN = (
    (
        re.compile(r"^postgres(?:ql)?\+(\w+)://", re.I),
        "{scheme} is SQLAlchemy's spelling (dialect+driver); this tool takes the plain "
        "URL: drop '+{driver}' (postgresql://user:password@host:5432/dbname)",
    ),
    (
        re.compile(r"^jdbc:postgres(?:ql)?://", re.I),
        "jdbc:postgresql:// is the JDBC driver's spelling; drop the 'jdbc:' prefix "
        "(postgresql://user:password@host:5432/dbname; ?user= and ?password= work too)",
    ),
)


def check_foreign_prefix(dsn: str) -> None:
    """Refuse another driver's URL spelling, naming the prefix and the fix."""
    for pattern, advice in _FOREIGN:
        match = pattern.match(dsn.strip())
        if match:
            scheme = match.group(0)
            driver = match.group(1) if match.groups() else ""
            raise ConfigurationError(
                "the database URL starts with "
                + advice.format(scheme=scheme.removesuffix("://"), driver=driver)
            )
    _check_dbmate_socket(dsn.strip())


def _check_dbmate_socket(dsn: str) -> None:
    """dbmate's ``?socket=DIR`` (its README's Unix-socket URL) is no libpq parameter: the
    driver would connect to the URL's host, or the default socket, instead."""
    from natlangchain_migrate.dsn import is_url, scrub

    if not is_url(dsn):
        return
    try:
        query = dict(parse_qsl(urlsplit(dsn).query))
    except ValueError:
        return  # an unreadable URL is named when connecting
    if "socket" in query and "host" not in query:
        folder = scrub(query["socket"], dsn)
        raise ConfigurationError(
            f"the database URL's socket={folder} is dbmate's spelling of a Unix-socket "
            f"folder; this tool takes libpq's: postgresql://user:password@/dbname?host={folder} "
            "(nothing between '@' and '/dbname')"
        )


def tls_mode(dsn: str) -> str | None:
    """The sslmode a connection to ``dsn`` uses: the URL's, else PGSSLMODE's."""
    from natlangchain_migrate.dsn import as_url

    try:
        query = dict(parse_qsl(urlsplit(as_url(dsn)).query))
    except (ValueError, ConfigurationError):
        query = {}
    return query.get("sslmode") or os.environ.get("PGSSLMODE")


def tls_required(dsn: str) -> bool:
    return tls_mode(dsn) in ("require", "verify-ca", "verify-full")


def tls_refused_advice(dsn: str) -> str:
    return (
        f"the server does not offer TLS, and sslmode={tls_mode(dsn)} requires it: turn TLS on "
        "at the server (ssl = on, with a certificate and key), or, on a network you trust, "
        "use sslmode=prefer or sslmode=disable; --wait does not retry this"
    )


def tls_files_advice(dsn: str) -> str:
    mode = tls_mode(dsn) or "verify-full"
    return (
        f"sslmode={mode} checks the server's certificate against a root certificate: put it "
        "at ~/.postgresql/root.crt or name it with sslrootcert=/path/root.crt (or "
        "PGSSLROOTCERT); sslmode=require encrypts without checking it"
    )
