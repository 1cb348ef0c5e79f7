"""Applying a streamed migration (a big file, or one with psql-style COPY data) inside
one transaction: its statements sent in pieces of about PIECE_CHARS, its COPY rows over
the COPY protocol, then its ledger row, so it is still all-or-nothing. The checksum in
the ledger row is computed from the same read as what was sent, so a file edited after
planning is recorded as it was applied.

Memory stays bounded by a piece (and the largest statement), whatever the file's size.
An error with a position is named ``file:line:column`` from the piece it came in; a
runtime error without one (a duplicate key) is found, like ``replay.py`` does for a
small file, by running the file again up to its piece, that piece statement by
statement, in a transaction that is rolled back (in transaction lock mode, in the
lock's transaction rolled back to the file's savepoint). A bad COPY row is named by the line
the server counts in the data section.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING

import asyncpg

from natlangchain_migrate.attempt import Attempts
from natlangchain_migrate.causes import Cause, classify
from natlangchain_migrate.copy_header import copy_arguments
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import ConfigurationError, MigrateError
from natlangchain_migrate.failures import migration_failed
from natlangchain_migrate.layouts import OPENS_NO_TRANSACTION
from natlangchain_migrate.local_settings import custom_settings, settings_noted_sql
from natlangchain_migrate.sqlscan import CopyIn, Scanned, Sql, scan
from natlangchain_migrate.statements import line_and_column

if TYPE_CHECKING:
    from importlib.abc import Traversable

# Characters of SQL per message: big enough that round trips do not count, small
# enough that the text, its encoding and the driver's buffer stay a few MB.
PIECE_CHARS = 1 << 20

# A local socket's send buffer during COPY (the kernel caps it at net.core.wmem_max): the
# server keeps loading rows from it while this process waits for a CPU or reads on.
COPY_SOCKET_BUFFER = 4 << 20

_COPY_ROW = re.compile(r"\bCOPY [^,]+, line (\d+)")
_LEADING = re.compile(r"(?:\s+|--[^\n]*\n)*")


def _leading(text: str) -> int:
    """Where the statement begins after blanks and ``--`` comments."""
    found = _LEADING.match(text)
    return found.end() if found else 0


class _Failed(Exception):
    """A piece or COPY failed: the server's error and where in the file it points."""

    def __init__(self, error: asyncpg.PostgresError, location: str | None, piece: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.location = location
        self.piece = piece


async def run_streamed(
    attempts: Attempts,
    migration: Migration,
    *,
    prefix: str,
    record: Callable[[str], str],
    own_transaction: bool,
    custom: set[str] | None = None,
    savepoint: str | None = None,
) -> None:
    """Send ``prefix`` (BEGIN and the settings, or the settings alone inside the caller's
    transaction), the file in pieces and its COPY rows, then ``record(checksum)`` (the
    ledger row with the checksum of what was sent, and COMMIT when the transaction is
    ours). ``custom``, when given (the lock's one transaction), gathers the
    made-up settings (``app.x``) the pieces may set, each noted before its piece runs
    (local_settings.settings_noted_sql); ``savepoint`` (there too) opens before the
    prefix and is released after the record, for a failure's replay to roll back to.
    Raises what ``Attempts.send`` raises (Blocked for a lock_timeout), or the migration's
    failure naming file:line."""
    conn = attempts.conn
    opening = f"SAVEPOINT {savepoint};\n" if savepoint else ""
    closing = f";\nRELEASE SAVEPOINT {savepoint};" if savepoint else ""
    try:
        await attempts.send(migration, opening + prefix, in_open_transaction=True)
        checksum = await _pieces(attempts, migration, stop_at=None, custom=custom)
        await attempts.send(migration, record(checksum) + closing, in_open_transaction=True)
    except _Failed as failed:
        undo = "ROLLBACK" if own_transaction else f"ROLLBACK TO SAVEPOINT {savepoint}"
        if (own_transaction or savepoint) and conn.is_in_transaction():
            await conn.execute(undo)
        location = failed.location
        if location is None and (own_transaction or savepoint):
            location = await _replay(attempts, migration, prefix, failed, undo)
        raise migration_failed(
            migration,
            failed.error,
            offset=0,
            applied=attempts.applied,
            location=location or migration.filename,
        ) from failed.error
    except BaseException:
        if own_transaction and not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise


async def _pieces(
    attempts: Attempts,
    migration: Migration,
    *,
    stop_at: int | None,
    custom: set[str] | None = None,
) -> str:
    """The file's statements in pieces and its COPY sections, and then its checksum; with
    ``stop_at``, the pieces before it whole and piece ``stop_at`` statement by statement
    (and an empty string: the file was not read to its end).

    The next piece is read and scanned in a thread while the server runs the current
    one; a COPY's rows are read as the socket takes them, the server loading those
    before them meanwhile."""
    if migration.source is None:
        raise TypeError(f"{migration.filename} is not a streamed migration")
    wrapper = migration.layout in OPENS_NO_TRANSACTION
    batches = _batches(migration.source, migration.filename, wrapper=wrapper)
    ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    number = 0
    try:
        while (batch := await ahead) is not None:
            if isinstance(batch, Scanned):
                return batch.checksum
            if isinstance(batch, CopyIn):
                await _copy(attempts, migration, batch, number)
                ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                continue
            number += 1
            if number == stop_at:
                await _send_piece(attempts, migration, batch, number, one_by_one=True)
                return ""
            ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            if custom is not None:
                await _note_settings(attempts, migration, batch, custom)
            await _send_piece(attempts, migration, batch, number, one_by_one=False)
    finally:
        if not ahead.done():  # let the thread leave the file before it is closed
            await asyncio.wait([ahead])
        if ahead.done() and not ahead.cancelled():
            ahead.exception()  # retrieved: a failure before it is what is reported
        batches.close()
    raise ConfigurationError(f"{migration.filename}: the scan ended without its checksum")


def _batches(
    source: Traversable, name: str, *, wrapper: bool
) -> Generator[list[Sql] | CopyIn | Scanned, None, None]:
    """The scan's statements gathered into pieces of about PIECE_CHARS, its COPYs, and
    its end."""
    piece: list[Sql] = []
    size = 0
    for item in scan(source, name, wrapper=wrapper):
        if isinstance(item, Sql):
            piece.append(item)
            size += len(item.text)
            if size >= PIECE_CHARS:
                yield piece
                piece, size = [], 0
            continue
        if piece:
            yield piece
            piece, size = [], 0
        yield item
    if piece:
        yield piece


async def _note_settings(
    attempts: Attempts, migration: Migration, piece: list[Sql], custom: set[str]
) -> None:
    """Note the made-up settings this piece may set that no piece before it named."""
    new = custom_settings("".join(item.text for item in piece)) - custom
    if new:
        await attempts.send(migration, settings_noted_sql(new), in_open_transaction=True)
        custom |= new


async def _send_piece(
    attempts: Attempts, migration: Migration, piece: list[Sql], number: int, *, one_by_one: bool
) -> None:
    parts = [piece] if not one_by_one else [[item] for item in piece]
    for part in parts:
        text = "".join(item.text for item in part)
        try:
            await attempts.send(migration, text, in_open_transaction=True)
        except asyncpg.PostgresError as error:
            position = getattr(error, "position", None)
            location = None
            if position or one_by_one:
                line, column = line_and_column(text, int(position) - 1 if position else 0)
                if not position:
                    line, column = line_and_column(text, _leading(text))
                first = part[0].line
                location = f"{migration.filename}:{first + line - 1}:{column}"
            raise _Failed(error, location, number) from error


async def _copy(attempts: Attempts, migration: Migration, item: CopyIn, number: int) -> None:
    """One COPY ... FROM stdin with its rows streamed from the file."""
    line = item.line + item.statement.count("\n", 0, _leading(item.statement))
    arguments = copy_arguments(item.statement, f"{migration.filename}:{line}")

    _widen_local_send_buffer(attempts.conn)

    async def rows() -> AsyncIterator[bytes]:
        # Read, checked and hashed here, in the event loop's thread, when asyncpg asks: it
        # asks once the socket has room, and the socket holds MBs of rows for the server
        # meanwhile. A reading thread, a MiB ahead, cost more than it saved: hand-overs
        # woke both threads, and its own memory arena, trimmed after each read, faulted
        # its pages back in (the CPU for 100 MB of rows 0.37-0.41 s, was 0.42-0.51 s).
        for chunk in item.rows:
            yield chunk

    try:
        await attempts.send(
            migration,
            item.statement,
            in_open_transaction=True,
            call=lambda: attempts.conn.copy_to_table(source=rows(), **arguments),
        )
    except asyncpg.PostgresError as error:
        found = _COPY_ROW.search(getattr(error, "context", None) or "")
        where = item.data_line + int(found[1]) - 1 if found else line
        raise _Failed(error, f"{migration.filename}:{where}", number) from error


def _widen_local_send_buffer(conn: asyncpg.Connection) -> None:
    """Give a Unix socket room for several MB of rows: its default (about 200 kB) is
    a millisecond of COPY, so the server idled whenever this process did not get a CPU
    at once. A TCP socket is left to the kernel's own sizing, which a fixed size would
    turn off."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < COPY_SOCKET_BUFFER:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, COPY_SOCKET_BUFFER)
    except OSError:
        pass  # only a speed-up


async def _replay(
    attempts: Attempts, migration: Migration, prefix: str, failed: _Failed, undo: str
) -> str | None:
    """Where a runtime error without a position is: the file run again up to its piece,
    that piece statement by statement, then ``undo`` (ROLLBACK, or ROLLBACK TO the file's
    savepoint in the caller's transaction); None if not met."""
    conn = attempts.conn
    if classify(failed.error.sqlstate).cause is not Cause.FILE or conn.is_closed():
        return None
    try:
        await conn.execute(prefix)
        await _pieces(attempts, migration, stop_at=failed.piece)
    except _Failed as again:
        if again.error.sqlstate == failed.error.sqlstate:
            return again.location
    except (MigrateError, asyncpg.PostgresError):
        return None
    finally:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute(undo)
    return None
