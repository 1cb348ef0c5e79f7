"""A goose, dbmate or node-pg-migrate file's up section, streamed as a whole up file is
(streamed.py) when the file is big or the section has COPY data.

The section markers are found by a line scan over the file in chunks (constant memory):
the same lines layout_sections.py takes for markers, by the same tests (a marker is a
whole line wherever it stands, in a COPY data block or a dollar-quoted body too, as the
tools' own parsers read it), and the same refusals, all before anything runs. The up
section is a range of the file's bytes (``Section``): the scan reads it from its own
line of the file, so errors name the file's lines, and hashes the section alone, which
is what the whole-read path's checksum covers. A down section is read whole when it runs.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, NamedTuple, cast

from natlangchain_migrate import filesum
from natlangchain_migrate.errors import ConfigurationError, unreadable_file
from natlangchain_migrate.layout_sections import (
    DBMATE_LINE,
    GOOSE_LINE,
    NO_TRANSACTION_DIRECTIVE,
    NODE_PG_SPLIT,
    LayoutFile,
    leading_version,
)

if TYPE_CHECKING:
    from importlib.abc import Traversable

# A chunk holds no marker unless its bytes hold this: node-pg-migrate's test ignores case,
# and Python's does so for str in Unicode, where i is also U+0130 and U+0131.
_I = rb"(?:[iI]|\xc4[\xb0\xb1])"
_HINTS = {
    "goose": re.compile(rb"\+goose"),
    "dbmate": re.compile(rb"migrate:"),
    "node-pg-migrate": re.compile(rb"(?i:m)" + _I + rb"(?i:grat)" + _I + rb"(?i:on)"),
}
# The same, for the lines of a chunk that holds it.
_TEXT_HINTS = {
    "goose": re.compile(r"\+goose"),
    "dbmate": re.compile(r"migrate:"),
    "node-pg-migrate": re.compile(r"migration", re.IGNORECASE),
}
_READ_BYTES = 1 << 20
# What str.splitlines (the whole read) ends a line at, besides \n and \r\n.
_OTHER_BREAKS = re.compile(r"\r(?!\n)|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


class Section:
    """The bytes ``start`` to ``end`` of a file, read as a file of its own (the scan, the
    checksum, a down section's text). The scan counts lines from ``first_line`` and sends
    each of goose's StatementBegin ... StatementEnd ``blocks`` (byte ranges in the
    section) as one statement. ``prefix`` goes before the bytes: dbmate's
    ``transaction:false`` on a down section, as our directive."""

    def __init__(
        self,
        entry: Traversable,
        start: int,
        end: int,
        *,
        first_line: int = 1,
        blocks: tuple[tuple[int, int], ...] = (),
        prefix: bytes = b"",
    ) -> None:
        self.entry = entry
        self.start = start
        self.end = end
        self.first_line = first_line
        self.blocks = blocks
        self.prefix = prefix
        self.name = entry.name

    def open(self, mode: str = "rb", encoding: str | None = None) -> _Range:
        if mode != "rb":
            raise ValueError("a section is read as bytes")
        return _Range(self.entry.open("rb"), self.start, self.end, self.prefix)

    def read_bytes(self) -> bytes:
        with self.open() as file:
            return file.read()

    def read_text(self, encoding: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8")

    def is_file(self) -> bool:
        return True

    def is_dir(self) -> bool:
        return False

    def __str__(self) -> str:
        return str(self.entry)


class _Range:
    """A file's bytes from ``start`` to ``end`` (after ``prefix``), as a binary file."""

    def __init__(self, file: IO[bytes], start: int, end: int, prefix: bytes) -> None:
        self.file = file
        self.left = end - start
        self.prefix = prefix
        try:
            file.seek(start)
        except (OSError, AttributeError, ValueError):  # not seekable: read past the start
            while start > 0 and (skipped := file.read(min(start, filesum.CHUNK_BYTES))):
                start -= len(skipped)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self.prefix) + self.left
        head, self.prefix = self.prefix[:size], self.prefix[size:]
        data = self.file.read(min(size - len(head), self.left)) if size > len(head) else b""
        self.left -= len(data)
        return head + data

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> _Range:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Split(NamedTuple):
    """Where a file's sections are: byte ranges and the line each starts on."""

    up: tuple[int, int, int]  # start, end, first line
    down: tuple[int, int] | None
    no_transaction: bool  # the whole file (goose) or its up section (dbmate) has none
    down_no_transaction: bool
    blocks: tuple[tuple[int, int], ...]  # goose's StatementBegin/End in the up section


def split_file(layout: str, entry: Traversable) -> LayoutFile | None:
    """The file as layout_sections.py splits it, its up section a ``Section`` and its
    down section one read when it runs; None when the file runs without a transaction
    (statement by statement, journalled: the caller reads it whole). Raises what the
    whole read raises, naming the file's line."""
    found = _scan(layout, entry)
    if found.no_transaction:
        return None
    up = found.up
    down = None
    if found.down is not None:
        prefix = NO_TRANSACTION_DIRECTIVE.encode() if found.down_no_transaction else b""
        down = cast("Traversable", Section(entry, *found.down, prefix=prefix))
    return LayoutFile(
        version=leading_version(entry.name),
        name=entry.name.removesuffix(".sql"),
        up=cast("Traversable", Section(entry, *up[:2], first_line=up[2], blocks=found.blocks)),
        up_sql="",
        down=down,
    )


def _bom(entry: Traversable) -> int:
    with entry.open("rb") as file:
        return len(codecs.BOM_UTF8) if file.read(3) == codecs.BOM_UTF8 else 0


def _scan(layout: str, entry: Traversable) -> Split:
    """The markers, from a read of the file's bytes: only a chunk that may hold one is
    decoded (a NUL byte or bad UTF-8 elsewhere is refused when the section is read)."""
    offset = _bom(entry)
    markers = _Markers(layout, entry.name, offset)
    line = 1
    hint, text_hint = _HINTS[layout], _TEXT_HINTS[layout]
    for chunk in _whole_lines(entry, offset):
        if hint.search(chunk) is None:
            offset += len(chunk)
            line += chunk.count(b"\n")
            continue
        if b"\0" in chunk:
            filesum.refuse_bad_text(entry, entry.name)
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            filesum.refuse_bad_text(entry, entry.name)
        if _OTHER_BREAKS.search(text) is None:
            _marked_lines(text, text_hint, markers, line, offset)
            offset += len(chunk)
            line += chunk.count(b"\n")
            continue
        for piece in text.splitlines(keepends=True):  # the whole read's lines
            markers.line(piece, line, offset)
            offset += len(piece.encode("utf-8"))
            line += piece.count("\n")
    return markers.done(offset)


def _whole_lines(entry: Traversable, skip: int) -> Iterator[bytes]:
    """The file's bytes after the first ``skip`` in chunks that end at a line end (the
    last may not)."""
    carry = b""
    try:
        with entry.open("rb") as file:
            file.read(skip)
            while raw := file.read(_READ_BYTES):
                data = carry + raw
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    yield data[:cut]
    except OSError as error:
        raise unreadable_file(entry, error) from error
    if carry:
        yield carry


def _marked_lines(text: str, hint: re.Pattern[str], markers: _Markers, line: int, at: int) -> None:
    """Each line of ``text`` (lines end at \\n only) that holds the hint, read as a
    marker may be: seed rows that mention a migration cost a search, not a line each."""
    done = 0  # text[done:] starts on the file's line ``line``, at its byte ``at``
    read = -1  # the start of the line read last
    for found in hint.finditer(text):
        start = text.rfind("\n", 0, found.start()) + 1
        if start == read:  # the hint twice on one line
            continue
        read = start
        stop = text.find("\n", found.end()) + 1 or len(text)
        at += len(text[done:start].encode("utf-8"))
        line += text.count("\n", done, start)
        markers.line(text[start:stop], line, at)
        done = start


class _Markers:
    """layout_sections.py's reading of each line, kept as byte ranges."""

    def __init__(self, layout: str, name: str, bom: int) -> None:
        self.bom = bom
        self.layout = layout
        self.name = name
        self.starts: dict[str, tuple[int, int]] = {}  # section: (first byte, first line)
        self.ends: dict[str, int] = {}
        self.current: str | None = None
        self.no_transaction = False
        self.options: dict[str, str] = {}
        self.blocks: list[tuple[int, int]] = []
        self.open_block: int | None = None

    def line(self, text: str, number: int, offset: int) -> None:
        after = offset + len(text.encode("utf-8"))
        if self.layout == "goose":
            self._goose(text, number, offset, after)
        elif self.layout == "dbmate":
            found = DBMATE_LINE.match(text.strip())
            if found is not None:
                self._section(found["section"], f"-- migrate:{found['section']}", number, offset)
                self._options(found["section"], found["options"], number)
                self.starts[found["section"]] = (after, number + 1)
        else:
            found = NODE_PG_SPLIT.match(text)
            if found is not None:
                section = found["section"].lower()
                self._section(section, f"-- {section.title()} Migration", number, offset)
                self.starts[section] = (after, number + 1)

    def _goose(self, text: str, number: int, offset: int, after: int) -> None:
        found = GOOSE_LINE.match(text.strip())
        if found is None:
            return
        command = found["command"]
        if command in ("Up", "Down"):
            self._section(command.lower(), f"-- +goose {command}", number, offset)
            self.starts[command.lower()] = (after, number + 1)
        elif command == "NO TRANSACTION":
            self.no_transaction = True
        elif command == "StatementBegin":
            if self.current == "up" and self.open_block is None:
                self.open_block = offset
        elif command == "StatementEnd":
            if self.current == "up" and self.open_block is not None:
                self.blocks.append((self.open_block, after))
                self.open_block = None
        elif command.startswith("ENVSUB"):
            raise ConfigurationError(
                f"{self.name}:{number}: goose's ENVSUB (environment substitution) is not "
                "supported here; write the values into the file"
            )
        else:
            raise ConfigurationError(
                f"{self.name}:{number}: unknown goose annotation '-- +goose {command}'; "
                "use Up, Down, StatementBegin, StatementEnd or NO TRANSACTION"
            )

    def _section(self, section: str, marker: str, number: int, offset: int) -> None:
        if section in self.starts:
            raise ConfigurationError(f"{self.name}:{number}: a second '{marker}'; keep one")
        self._close(offset)
        self.current = section

    def _close(self, offset: int) -> None:
        if self.current is not None:
            self.ends[self.current] = offset
            if self.current == "up" and self.open_block is not None:
                self.blocks.append((self.open_block, offset))
                self.open_block = None

    def _options(self, section: str, options: str, number: int) -> None:
        for option in options.split():
            key, _, value = option.partition(":")
            if key != "transaction" or value not in ("true", "false"):
                raise ConfigurationError(
                    f"{self.name}:{number}: unknown dbmate option {option!r}; dbmate's "
                    "only option is transaction:false"
                )
            self.options[section] = value

    def done(self, size: int) -> Split:
        self._close(size)
        if "up" not in self.starts:
            if self.layout == "goose":
                raise ConfigurationError(
                    f"{self.name}: a goose migration needs a '-- +goose Up' line; add it"
                )
            if self.layout == "dbmate":
                raise ConfigurationError(f"{self.name}: a dbmate migration needs '-- migrate:up'")
            if "down" in self.starts:
                raise ConfigurationError(
                    f"{self.name}: '-- Down Migration' without '-- Up Migration' above the up "
                    "SQL; add that line (node-pg-migrate would run the down section as part "
                    "of the up)"
                )
        start, first_line = self.starts.get("up", (self.bom, 1))  # node-pg-migrate: all up
        end = self.ends.get("up", size)
        blocks = tuple((begin - start, stop - start) for begin, stop in self.blocks)
        down = (self.starts["down"][0], self.ends["down"]) if "down" in self.starts else None
        return Split(
            up=(start, end, first_line),
            down=down,
            no_transaction=self.no_transaction or self.options.get("up") == "false",
            down_no_transaction=self.options.get("down") == "false",
            blocks=blocks,
        )
