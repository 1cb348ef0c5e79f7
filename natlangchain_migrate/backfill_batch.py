"""One backfill batch as one message to the server.

``BEGIN``, the settings, the batch's position row, the statement with its bounds
written in as literals, and ``COMMIT`` go as one simple query: the rows the
statement locks stay locked only while the server runs it, with no round trip to
the client before the commit (on a busy machine the client's turn to send the
position or the COMMIT kept the application's writes waiting tens of ms more).
An error's position in that message is mapped back to the file, for
``file:line:column``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import NamedTuple

import asyncpg

from natlangchain_migrate.connection import CLEANUP_S

BOUND = re.compile(r"(?<!:):(lo|hi)\b")


def literal(text: str, type_name: str) -> str:
    """``text`` as a literal of ``type_name``, whatever standard_conforming_strings says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'::" + type_name


class _Piece(NamedTuple):
    at: int  # where it starts in the message (0-based)
    source: int  # where it starts in the file's text (0-based)
    length: int


class Batch(NamedTuple):
    """A batch's message, and where each verbatim piece of the statement came from."""

    text: str
    pieces: tuple[_Piece, ...]
    statement_at: int  # where the statement starts in the file's text

    def offset_for(self, position: int | None) -> int:
        """``locate``'s offset for an error at ``position`` (1-based, in ``text``): an
        error inside a bound points at the bound, one outside the statement at its start."""
        if position is None:
            return self.statement_at
        index = position - 1
        if index < self.pieces[0].at:
            return self.statement_at - index
        for piece in self.pieces:
            if index < piece.at:  # inside the bound's literal before this piece
                return piece.source - len(":lo") - index
            if index < piece.at + piece.length:
                return piece.source - piece.at
        return self.statement_at - index  # in the COMMIT


def render(source: str, *, prefix: str, bounds: dict[str, str], position_sql: str) -> Batch:
    """The message for one batch of the statement in ``source`` (the file's text),
    ``bounds`` the literals for ``lo`` and ``hi``."""
    head = f"BEGIN; {prefix}; {position_sql}; "
    start = len(source) - len(source.lstrip())
    body = source.strip()
    parts: list[str] = [head]
    pieces: list[_Piece] = []
    at, last = len(head), 0
    for found in [*BOUND.finditer(body), None]:
        end = found.start() if found else len(body)
        pieces.append(_Piece(at, start + last, end - last))
        parts.append(body[last:end])
        at += end - last
        if found:
            parts.append(bounds[found[1]])
            at += len(bounds[found[1]])
            last = found.end()
    parts.append("\n;\nCOMMIT")  # after a newline: the body may end in a -- comment
    return Batch("".join(parts), tuple(pieces), start)


async def send(conn: asyncpg.Connection, batch: Batch) -> None:
    """Run the batch; on any error or cancellation roll back what it began."""
    try:
        await conn.execute(batch.text)
    except BaseException:
        if not conn.is_closed():  # an error ends in an aborted transaction block
            with contextlib.suppress(
                asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError
            ):
                await asyncio.wait_for(conn.execute("ROLLBACK"), CLEANUP_S)
        raise
