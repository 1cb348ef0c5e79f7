"""What lint reads of a streamed (big) file: its statements that are not data.

A streamed file is never held whole, and squawk's rules are about schema changes, so
lint reads it statement by statement from the scanner (sqlscan.py) and keeps only the
statements that change something other than rows: INSERT, UPDATE, DELETE, MERGE,
SELECT, VALUES, TABLE, WITH and each COPY with its data section are skipped. Memory is
bounded by the statements kept and the largest statement, not by the data. The kept
statements are linted as one text; ``LineMap`` takes a line of that text back to the
file's line, so a finding names the file's own ``file:line:column``.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING, NamedTuple

from natlangchain_migrate.layouts import OPENS_NO_TRANSACTION
from natlangchain_migrate.sqlscan import CopyIn, Sql, scan

if TYPE_CHECKING:
    from natlangchain_migrate.discovery import Migration

_DATA = re.compile(
    r"(?:\s++|--[^\n]*+\n|/\*(?>[^*]++|\*(?!/))*+\*/)*+"
    r"(?:insert|update|delete|merge|select|values|table|with)\b",
    re.I,
)
# A kept statement that starts on the line where a skipped one ends is indented by that
# line's length, so its columns stay the file's; past this, a column may fall short.
_MOST_INDENT = 1 << 16


class LineMap(NamedTuple):
    """Where each run of kept statements starts in the lint text, and how many lines
    further on it is in the file."""

    starts: list[int]
    shifts: list[int]

    def line(self, line: int) -> int:
        """The file's line for a line of the lint text."""
        at = bisect.bisect_right(self.starts, line) - 1
        return line + self.shifts[at] if at >= 0 else line


def lint_view(migration: Migration) -> tuple[Migration, LineMap]:
    """The migration with the statements lint reads as its text, and the way back to
    the file's lines. Raises what the scan raises (a psql meta-command, bad UTF-8)."""
    if migration.source is None:
        raise TypeError(f"{migration.filename} is not a streamed migration")
    parts: list[str] = []
    starts: list[int] = []
    shifts: list[int] = []
    line = 1  # the lint text's line that the next character goes on
    column = 0  # characters before the next statement on its line in the file
    kept_last = False
    wrapper = migration.layout in OPENS_NO_TRANSACTION
    for item in scan(migration.source, migration.filename, hashed=False, wrapper=wrapper):
        if isinstance(item, Sql) and _DATA.match(item.text) is None:
            if not kept_last:
                if parts and not parts[-1].endswith("\n"):
                    parts.append("\n")
                    line += 1
                parts.append(" " * min(column, _MOST_INDENT))
                starts.append(line)
                shifts.append(item.line - line)
            parts.append(item.text)
            line += item.text.count("\n")
            kept_last = True
        elif isinstance(item, Sql):
            newline = item.text.rfind("\n")
            column = column + len(item.text) if newline < 0 else len(item.text) - newline - 1
            kept_last = False
        elif isinstance(item, CopyIn):
            for _ in item.rows:  # the data section ends with its \. line: a new line follows
                pass
            column, kept_last = 0, False
    return migration._replace(sql="".join(parts)), LineMap(starts, shifts)
