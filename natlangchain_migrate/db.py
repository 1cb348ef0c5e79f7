"""Connecting: waiting for a server that is not up yet, and what to say when we can't.

A wrong password, an unknown database or a bad DSN fails at once; a refused
connection, an unresolved name or a server still starting is retried until
the ``wait`` deadline. No message here ever carries the DSN's password.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import structlog

from natlangchain_migrate.errors import (
    ConfigurationError,
    ConnectionRejectedError,
    DatabaseUnreachableError,
)

log = structlog.get_logger("natlangchain_migrate")

_REJECTED = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
_RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
)
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3


def application_name() -> str:
    """How our sessions appear in pg_stat_activity: ``natlangchain-migrate/<host>/<pid>``."""
    return f"natlangchain-migrate/{socket.gethostname()}/{os.getpid()}"[:63]


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (the only form we ever print)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def password_of(dsn: str) -> str | None:
    """The DSN's password, so that log output can be scrubbed of it."""
    try:
        return urlsplit(dsn).password
    except ValueError:
        return None


def server_settings(*, pgbouncer: bool) -> dict[str, str]:
    """Settings sent in the startup packet (free: no extra round trip).

    PgBouncer refuses startup parameters it does not know, so through it we
    send only application_name.
    """
    settings = {"application_name": application_name()}
    if not pgbouncer:
        settings |= {
            # The server notices a vanished runner and frees its session lock.
            "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
            "client_connection_check_interval": "5s",
        }
    return settings


def _set_client_keepalives(conn: asyncpg.Connection) -> None:
    """Turn on TCP keepalives on our side, so a server gone from the network is noticed."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def connect(
    dsn: str,
    *,
    wait: float = 0.0,
    pgbouncer: bool = False,
    connect_timeout: float = 10.0,
) -> asyncpg.Connection:
    """A connection to ``dsn``, retrying a server that is not up until ``wait`` seconds pass."""
    deadline = time.monotonic() + wait
    attempt = 0
    delay = 0.25
    while True:
        attempt += 1
        try:
            conn = await asyncpg.connect(
                dsn,
                timeout=connect_timeout,
                server_settings=server_settings(pgbouncer=pgbouncer),
                statement_cache_size=0 if pgbouncer else 100,
            )
            _set_client_keepalives(conn)
            return conn
        except _REJECTED as error:
            raise ConnectionRejectedError(
                f"{redact(dsn)} refused the connection: {error}; check the user, password "
                "and database name in --database-url or DATABASE_URL"
            ) from None
        except (ValueError, asyncpg.ClientConfigurationError, asyncpg.InterfaceError) as error:
            raise ConfigurationError(
                f"invalid database URL {redact(dsn)}: {scrub(str(error), dsn)}; use "
                "postgresql://user:password@host:5432/dbname"
            ) from None
        except _RETRYABLE as error:
            reason = scrub(str(error) or type(error).__name__, dsn)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" for {wait:g}s" if wait else ""
                raise DatabaseUnreachableError(
                    f"could not connect to {redact(dsn)}{waited}: {reason}; is the server "
                    "running, and do --database-url or DATABASE_URL point at it? "
                    "(--wait SECONDS waits for a server that is starting)"
                ) from None
            log.info(
                "database_waiting",
                attempt=attempt,
                reason=reason,
                retry_in_s=round(min(delay, remaining), 2),
                remaining_s=round(remaining, 1),
            )
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 1.6, 2.0)


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN shown redacted and its password, wherever it appears, as ***."""
    secret = password_of(dsn)
    return text.replace(dsn, redact(dsn)).replace(secret, "***") if secret else text
