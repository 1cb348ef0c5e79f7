"""libpq's connection service file (pg_service.conf), which asyncpg does not read.

A ``service=`` in the DSN, else PGSERVICE, names a ``[section]`` of key=value settings,
looked up as libpq does: PGSERVICEFILE (or the DSN's ``servicefile=``), else
~/.pg_service.conf; then PGSYSCONFDIR/pg_service.conf (else the packaged sysconfdirs).
Its settings fill what the DSN leaves out, and dsn.as_url writes them into the URL
asyncpg gets, so the DSN's own values win over the service's and the service's over
the PG* environment's, libpq's order. Lines are read as libpq reads them (no spaces
around '='); a bad line, or a service found nowhere, is an error naming the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from natlangchain_migrate.errors import ConfigurationError


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Settings asyncpg takes (in the URL, or as a startup parameter): passed on.
_PASSED = _words(
    "host port dbname user password passfile sslmode sslcert sslkey sslrootcert sslcrl "
    "sslpassword sslnegotiation ssl_min_protocol_version ssl_max_protocol_version "
    "target_session_attrs krbsrvname gsslib application_name options"
)
# libpq's settings for how the client waits or names itself, which asyncpg has no
# spelling of and which change neither the server nor who logs in: left out.
_IGNORED = _words(
    "connect_timeout keepalives keepalives_idle keepalives_interval keepalives_count "
    "tcp_user_timeout fallback_application_name client_encoding sslsni sslcompression "
    "load_balance_hosts requiressl"
)
# libpq's settings a user relies on that asyncpg cannot honour: refused, never dropped,
# unless their value asks for nothing (gssencmode=disable: asyncpg never uses GSS
# encryption).
_HARMLESS_VALUES = {
    "gssencmode": ("disable", "prefer"),
    "channel_binding": ("disable", "prefer"),
    "sslcertmode": ("disable", "allow"),
}
_REFUSED = _words(
    "hostaddr require_auth requirepeer gssdelegation replication min_protocol_version "
    "max_protocol_version sslcrldir sslkeylogfile scram_client_key scram_server_key "
    "oauth_issuer oauth_client_id oauth_client_secret oauth_scope servicefile"
) | frozenset(_HARMLESS_VALUES)
# Where packaged libpqs look for the system-wide file (Debian and Ubuntu; Red Hat's
# PGDG; a source build's default), when PGSYSCONFDIR is not set.
SYSCONFDIRS = ("/etc/postgresql-common", "/etc/sysconfig/pgsql", "/usr/local/pgsql/etc")
_SHOWN_KEY = re.compile(r"[\w ]{1,40}")


class ServiceFileError(ConfigurationError):
    """Raised for a service named nowhere, or a service file libpq would not read."""


class Service(NamedTuple):
    """A service's settings, and where they came from (for the ``connecting`` log)."""

    name: str
    file: Path
    settings: dict[str, str]

    def shown(self) -> str:
        """``service prod (~/.pg_service.conf)``: never a setting's value."""
        return f"service {self.name} ({shown_path(self.file)})"


def shown_path(path: Path) -> str:
    """The path, with the home directory as ``~``."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except (ValueError, RuntimeError, KeyError):
        return str(path)


def named(service: str | None) -> str | None:
    """The service a DSN names (its ``service=``), else PGSERVICE's; None for neither."""
    return service or os.environ.get("PGSERVICE") or None


def lookup(service: str | None, servicefile: str | None = None) -> Service | None:
    """The service a DSN's ``service=`` (else PGSERVICE) names, read as libpq reads it:
    the user's file first, then the system's; None when no service is named."""
    name = named(service)
    if name is None:
        return None
    looked: list[str] = []
    for path in (_user_file(servicefile), _system_file()):
        if path is None:
            continue
        if not path.exists():
            looked.append(f"{shown_path(path)} (no such file)")
            continue
        settings = _section(path, name)
        if settings is not None:
            return Service(name, path, settings)
        looked.append(f"{shown_path(path)} (no [{name}] section)")
    given = "service=" if service else "PGSERVICE"
    raise ServiceFileError(
        f"{given} names service {name!r}, which no service file defines: "
        f"{', '.join(looked)}; add a [{name}] section of libpq settings (host=..., "
        "port=..., dbname=..., user=...) to ~/.pg_service.conf, or name its file with "
        "PGSERVICEFILE (the system-wide one: PGSYSCONFDIR/pg_service.conf)"
    )


def _user_file(servicefile: str | None) -> Path | None:
    given = servicefile or os.environ.get("PGSERVICEFILE")
    if given:
        return Path(given).expanduser()
    try:
        return Path.home() / ".pg_service.conf"
    except (RuntimeError, KeyError):  # no home directory: libpq goes on to the system file
        return None


def _system_file() -> Path:
    directory = os.environ.get("PGSYSCONFDIR")
    if directory:
        return Path(directory) / "pg_service.conf"
    candidates = [Path(each) / "pg_service.conf" for each in SYSCONFDIRS]
    return next((each for each in candidates if each.exists()), candidates[0])


def _section(path: Path, name: str) -> dict[str, str] | None:
    """The settings of ``[name]`` in ``path`` (its first such section), None without one.

    As libpq: leading and trailing blanks and ``#`` lines are skipped, a line starting
    ``[name]`` opens the section and the next ``[`` ends it; in it, each line is
    key=value split at the first '=', the first of two equal keys wins. Lines outside
    it are not read. Errors name the file, line and key, never a value.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or type(error).__name__
        raise ServiceFileError(
            f"service file {shown_path(path)}: cannot read it ({why}); make it a readable "
            "UTF-8 file, or name another with PGSERVICEFILE"
        ) from None
    settings: dict[str, str] | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if settings is not None:
                break
            if line.startswith(f"[{name}]"):
                settings = {}
            continue
        if settings is None:
            continue
        key, equals, value = line.partition("=")
        where = f"{shown_path(path)}:{number}: in service [{name}],"
        _check_setting(key, value, bool(equals), where)
        if key in _PASSED:
            settings.setdefault(key, value)
    return settings


def _check_setting(key: str, value: str, has_equals: bool, where: str) -> None:
    if not has_equals:
        raise ServiceFileError(
            f"{where} the line is not key=value (libpq reads host=db); fix or remove it"
        )
    shown = repr(key) if _SHOWN_KEY.fullmatch(key) else "the key"
    if key != key.strip():
        raise ServiceFileError(
            f"{where} {shown} has a blank beside '=', which libpq does not read; "
            f"write {key.strip()}=value"
        )
    if key == "service":
        raise ServiceFileError(
            f"{where} service= inside a service: libpq does not nest services; copy that "
            "service's settings here"
        )
    if key in _PASSED or key in _IGNORED:
        return
    if key in _HARMLESS_VALUES and value in _HARMLESS_VALUES[key]:
        return
    if key in _REFUSED:
        raise ServiceFileError(
            f"{where} {key}= is a libpq setting this tool cannot honour (its driver, "
            "asyncpg, has no such setting); remove it, or give this tool a service "
            "without it" + ("; use host= instead" if key == "hostaddr" else "")
        )
    raise ServiceFileError(
        f"{where} {shown} is not a libpq connection setting (host, port, dbname, user, "
        "password, sslmode, ...); fix or remove the line"
    )
