"""Every form of DSN a user may hand us, and keeping its password out of every output.

Platforms hand out URLs (``postgresql://user:pw@host/db``, with the password
percent-encoded or as a ``password=`` query parameter) and libpq key=value
strings (``host=db dbname=app password=...``). asyncpg takes only URLs, so a
key=value string is turned into one. Whatever the form, ``secrets_of`` lists
every spelling of the password (as written, percent-decoded, and PGPASSWORD's),
and ``scrub`` replaces each of them wherever it appears.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from natlangchain_migrate import pgservice
from natlangchain_migrate.errors import ConfigurationError

_URL_SCHEMES = ("postgresql://", "postgres://")
_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
_HIDDEN = "***"


def is_url(dsn: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` DSNs; anything else is key=value."""
    return dsn.startswith(_URL_SCHEMES)


def parse_key_value(dsn: str) -> dict[str, str]:
    """A libpq key=value string's settings (values may be 'single quoted', with \\' escapes).

    Errors name the position, never the text: it may hold a password.
    """
    settings: dict[str, str] = {}
    position = 0
    while position < len(dsn):
        if dsn[position:].strip() == "":
            break
        key = _KEY.match(dsn, position)
        if key is None:
            raise ConfigurationError(
                f"the database setting is neither a postgresql:// URL nor libpq key=value "
                f"pairs (unreadable at character {position + 1}); use "
                "postgresql://user:password@host:5432/dbname"
            )
        position = key.end()
        value, position = _value_at(dsn, position)
        settings[key.group(1)] = value
    return settings


def _value_at(dsn: str, position: int) -> tuple[str, int]:
    if position < len(dsn) and dsn[position] == "'":
        value: list[str] = []
        position += 1
        while position < len(dsn) and dsn[position] != "'":
            if dsn[position] == "\\" and position + 1 < len(dsn):
                position += 1
            value.append(dsn[position])
            position += 1
        if position >= len(dsn):
            raise ConfigurationError(
                "the database setting has a quoted value that is never closed; close it with '"
            )
        return "".join(value), position + 1
    end = position
    while end < len(dsn) and not dsn[end].isspace():
        end += 1
    return dsn[position:end].replace("\\", ""), end


def as_url(dsn: str) -> str:
    """The DSN as the URL asyncpg takes: URLs unchanged, key=value strings converted, and
    the settings of a connection service (``service=``, else PGSERVICE) written in.

    A URL with two '@' before its path (an unencoded '@' in a password) is refused:
    drivers split it at different '@'s, and the error would name a host that is fine.
    """
    if is_url(dsn):
        authority_and_path = dsn.split("://", 1)[1].split("?", 1)[0]
        if authority_and_path.count("@") > 1:
            raise ConfigurationError(
                "the database URL has more than one '@' before its host: percent-encode "
                "'@' in the user name or password as %40 (':' as %3A, '/' as %2F), or use "
                "the key=value form (host=... user=... password='...')"
            )
        service = service_of(dsn)
        if service is None:
            return dsn
        settings = _url_settings(dsn)
    else:
        settings = parse_key_value(dsn)
        service = pgservice.lookup(settings.get("service"), settings.get("servicefile"))
    settings.pop("service", None)
    settings.pop("servicefile", None)
    for key, value in service.settings.items() if service else ():
        settings.setdefault(key, value)  # the DSN's own value wins, as in libpq
    return _url_of(settings)


def service_of(dsn: str) -> pgservice.Service | None:
    """The connection service ``dsn`` names (``service=``), else PGSERVICE's; None."""
    if is_url(dsn):
        given = dict(parse_qsl(dsn.partition("?")[2].partition("#")[0]))
    else:
        given = parse_key_value(dsn)
    return pgservice.lookup(given.get("service"), given.get("servicefile"))


def _url_settings(url: str) -> dict[str, str]:
    """A URL's settings as libpq key=value pairs (its host, port, user and database win
    over the same keys in its query, as asyncpg reads them)."""
    parts = urlsplit(url)
    settings = {
        "dbname" if key == "database" else key: value
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    }
    userinfo, _, hostspec = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if user:
        settings["user"] = unquote(user)
    if colon:
        settings["password"] = unquote(password)
    hosts, ports = [], []
    for spec in filter(None, hostspec.split(",")):
        if spec.startswith("["):  # [IPv6]:port
            host, _, port = spec[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = spec.partition(":")
        hosts.append(unquote(host))
        ports.append(port)
    if any(hosts):
        settings["host"] = ",".join(hosts)
    if any(ports):
        settings["port"] = ",".join(ports)
    if parts.path.strip("/"):
        settings["dbname"] = unquote(parts.path.lstrip("/"))
    return settings


def _url_of(settings: dict[str, str]) -> str:
    """libpq key=value settings as a URL asyncpg reads the same way."""
    user = quote(settings.pop("user", ""), safe="")
    password = settings.pop("password", None)
    userinfo = user + (f":{quote(password, safe='')}" if password is not None else "")
    host = settings.pop("host", "")
    port = settings.pop("port", "")
    dbname = quote(settings.pop("dbname", ""), safe="")
    query: dict[str, str] = {}
    if host.startswith("/") or "," in host:  # a Unix socket directory, or several hosts
        query["host"] = host
        host = ""
    elif ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if port and not host:
        query["port"] = port
        port = ""
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if port else "")
    query |= settings
    # No database, no path: asyncpg reads "/" as an empty name and skips PGDATABASE.
    path = f"/{dbname}" if dbname else ""
    return f"postgresql://{netloc}{path}" + (f"?{urlencode(query)}" if query else "")


def with_database(dsn: str, database: str) -> str:
    """``dsn`` (a URL or key=value string) as a URL to ``database`` on the same server,
    with the same host, user, password and settings: the one way the package (and its
    tests and harness) names another database on a server (verify's scratch database,
    the pytest plugin's templates and clones)."""
    parts = urlsplit(as_url(dsn))
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key in ("dbname", "database") for key, _ in pairs):
        query = urlencode([(k, v) for k, v in pairs if k not in ("dbname", "database")])
    return urlunsplit(parts._replace(path=f"/{quote(database, safe='')}", query=query))


def secrets_of(dsn: str | None) -> list[str]:
    """Every spelling of the password that ``dsn``, its connection service or the
    environment carries."""
    found = written_passwords(dsn) if dsn else []
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    found += _service_password(dsn)
    spellings = {
        spelling
        for secret in found
        for spelling in (secret, unquote(secret), quote(unquote(secret), safe=""))
    }
    # A spelling inside a longer one is a misparse's fragment of it (urlsplit reads
    # "u:p/w@h" as password "p"): scrubbing the longer one covers it, and scrubbing the
    # fragment alone would mangle every word that holds it.
    kept = [s for s in spellings if s and not any(s != o and s in o for o in spellings)]
    return sorted(kept, key=len, reverse=True)


def written_passwords(dsn: str) -> list[str]:
    """The passwords written in ``dsn`` itself (an unreadable DSN is one whole secret)."""
    try:
        return _passwords_in(dsn)
    except (ValueError, ConfigurationError):
        return [dsn]


def _service_password(dsn: str | None) -> list[str]:
    """The password of the service ``dsn`` (or PGSERVICE) names; none when unreadable
    (the connection's own error says why)."""
    try:
        service = service_of(dsn) if dsn else pgservice.lookup(None)
    except (ValueError, ConfigurationError):
        return []
    password = service.settings.get("password") if service else None
    return [password] if password else []


def _passwords_in(dsn: str) -> list[str]:
    if not is_url(dsn):
        password = parse_key_value(dsn).get("password")
        return [password] if password else []
    found = _unencoded_password(dsn)
    try:
        parts = urlsplit(dsn)
        found += [parts.password] if parts.password else []
    except ValueError:  # e.g. an unencoded "[" reads as a broken IPv6 address
        return found or [dsn]
    found += [value for key, value in parse_qsl(parts.query) if key == "password"]
    found += [value for key, value in _raw_query(parts.query) if key == "password"]
    return found


def _unencoded_password(url: str) -> list[str]:
    """The password as written between ``user:`` and the last ``@``.

    A password with an unencoded ``/``, ``?`` or ``#`` ends urlsplit's netloc early, so
    its password is only the part before that character; asyncpg then fails on the
    URL and may echo the rest. Taking the span as the user wrote it covers that.
    """
    rest = url.split("://", 1)[1]
    userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
    return [userinfo.split(":", 1)[1]] if ":" in userinfo else []


def _raw_query(query: str) -> list[tuple[str, str]]:
    pairs = (pair.split("=", 1) for pair in query.split("&") if "=" in pair)
    return [(key, value) for key, value in pairs]


def redact(dsn: str) -> str:
    """The DSN as we may print it: its password, wherever it sits, as ``***``."""
    if not is_url(dsn):
        try:
            settings = parse_key_value(dsn)
        except ConfigurationError:
            return "<unreadable database setting>"
        return " ".join(
            f"{key}={_HIDDEN if key == 'password' else value}" for key, value in settings.items()
        )
    # Every known spelling first (a misparsed URL keeps part of its password outside
    # what urlsplit calls the password), then the structure for what is left. The
    # scheme and the user name are kept as written: a password that happens to be part
    # of "postgresql" must not turn the URL into one nobody can read.
    scheme, separator, rest = dsn.partition("://")
    colon, at = rest.find(":"), rest.rfind("@")
    kept = rest[: colon + 1] if 0 <= colon < at else ""
    scrubbed = scheme + separator + kept + scrub(rest[len(kept) :], dsn)
    try:
        parts = urlsplit(scrubbed)
        has_password = parts.password is not None
    except ValueError:
        return "<unreadable database URL>"
    netloc = parts.netloc
    if has_password:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{_HIDDEN}@{host}"
    query = "&".join(
        f"password={_HIDDEN}" if pair.split("=", 1)[0] == "password" else pair
        for pair in parts.query.split("&")
    )
    shown = urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))
    if separator and not netloc:  # urlunsplit drops an empty authority's "//"
        shown = f"{parts.scheme}://{shown[len(parts.scheme) + 1 :]}"
    return shown


def scrub(text: str, dsn: str | None) -> str:
    """``text`` with every spelling of the DSN's password (and PGPASSWORD's) as ``***``."""
    for secret in secrets_of(dsn):
        text = text.replace(secret, _HIDDEN)
    return text
