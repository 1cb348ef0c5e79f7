"""Reading a migration file in pieces, in constant memory: its checksum while reading,
and its statements and psql-style COPY data sections one by one.

A big file (a seed of reference data, pg_dump's output) is never held whole: the
checksum is the same SHA-256 as ``discovery.checksum`` of the whole text, computed a
chunk at a time, and the scanner finds statement ends with one regular expression
that knows strings, quoted names, comments and dollar quotes (no parse tree: pglast
on 100 MB of INSERTs needs gigabytes). Nested ``/* /* */ */`` comments are read as
flat ones, which can only move a split point inside such a comment.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, NamedTuple

from natlangchain_migrate.errors import ConfigurationError

if TYPE_CHECKING:
    from importlib.abc import Traversable

CHUNK_BYTES = 1 << 20  # one read from the file

# The pieces a statement is made of; a statement ends at the first ';' outside them.
# Possessive and atomic forms keep the regex engine from remembering every piece.
_IDENT_CHAR = r"[\w\x80-\U0010ffff]"
_TAG = r"(?:[A-Za-z_\x80-\U0010ffff]" + _IDENT_CHAR + r"*+)?"
_PIECES = re.compile(
    r"(?:"
    r"[^'\";$/\-]++"  # ordinary text
    r"|(?<=[^\w$][Ee])'(?:[^'\\]++|\\.|'')*+'"  # E'...' with backslash escapes
    r"|'[^']*+'"  # a string ('' is two adjacent strings: the same split)
    r"|\"[^\"]*+\""  # a quoted name
    r"|--[^\n]*+"  # a line comment
    r"|/\*(?>[^*]++|\*(?!/))*+\*/"  # a block comment
    r"|(?<![\w$])\$(?P<tag>" + _TAG + r")\$(?s:.*?)\$(?P=tag)\$"  # a dollar quote
    r"|(?<=[\w$])\$|\$(?!" + _TAG + r"\$)"  # a $ that opens no dollar quote
    r"|/(?!\*)|-(?!-)"
    r")*+",
    re.S,
)
_LEADING = r"(?:\s++|--[^\n]*+\n|/\*(?>[^*]++|\*(?!/))*+\*/)*+"
_META_COMMAND = re.compile(_LEADING + r"(?<![^\n])\\([A-Za-z]*)[^\n]*+\n?")
# pg_dump's \restrict KEY / \unrestrict KEY lines: psql's guards, nothing for the server.
_DUMP_GUARDS = frozenset({"restrict", "unrestrict"})
_COPY_FROM_STDIN = re.compile(_LEADING + r"copy\b[^;]*?\bfrom\s+stdin\b", re.I | re.S)
_TRANSACTION_CONTROL = re.compile(
    _LEADING
    + r"(begin|commit|rollback|abort|end|start\s+transaction|savepoint|release"
    + r"|prepare\s+transaction)\b",
    re.I,
)
# Line-wise, while hashing: a COPY ... FROM stdin line and the end of a data section.
_COPY_LINE = re.compile(rb"^[ \t]*copy\b[^;\n]*\bfrom\s+stdin\b|^\\\.\r?$", re.I | re.M)


class Survey(NamedTuple):
    """What one read of a file found: its checksum and size, and whether it has
    psql-style COPY data sections, each closed by ``\\.``."""

    checksum: str
    size: int
    copy_data: bool


class Sql(NamedTuple):
    """One statement and the line (from 1) it starts on."""

    text: str
    line: int


class CopyIn(NamedTuple):
    """A ``COPY ... FROM stdin`` statement and its data section: the rows start on
    ``data_line``; ``rows`` must be read to its end before the scan goes on."""

    statement: str
    line: int
    data_line: int
    rows: Iterator[bytes]


def survey(entry: Traversable, name: str) -> Survey:
    """Read the file once, a chunk at a time: its checksum (``discovery.checksum`` of its
    text), its size and its COPY data sections. A NUL byte or bad UTF-8 is refused,
    naming the line or byte. Bytes throughout: the checksum hashes the text's UTF-8,
    which is the file's bytes without a byte-order mark."""
    hasher = _Hasher()
    size = 0
    line = 1
    in_copy: int | None = None  # the line of the open COPY
    copy_data = False
    for chunk, raw in _complete_lines(entry, name):
        size += raw
        if b"\0" in chunk:
            where = line + chunk.count(b"\n", 0, chunk.index(b"\0"))
            raise ConfigurationError(
                f"{name}:{where}: a NUL byte (\\0), which no SQL text may hold; remove it "
                "(a binary value belongs in a bytea literal such as '\\x00')"
            )
        if _may_copy(chunk) or (in_copy is not None and b"\\." in chunk):
            for found in _COPY_LINE.finditer(chunk):
                is_end = found.group().startswith(b"\\")
                if in_copy is None and not is_end:
                    in_copy = line + chunk.count(b"\n", 0, found.start())
                elif in_copy is not None and is_end:
                    in_copy, copy_data = None, True
        hasher.add(chunk)
        line += chunk.count(b"\n")
    # A COPY without its "\." is left to preflight, which refuses it before anything runs.
    return Survey(hasher.hexdigest(), size, copy_data and in_copy is None)


def _may_copy(chunk: bytes) -> bool:
    """A cheap look for a COPY ... FROM stdin (lowercase, uppercase or capitalised)."""
    return b"stdin" in chunk or b"STDIN" in chunk or b"Stdin" in chunk


def _complete_lines(entry: Traversable, name: str) -> Iterator[tuple[bytes, int]]:
    """The file's bytes (without a byte-order mark) in chunks that end at a line end (the
    last one may not), each with the number of bytes read for it; UTF-8 checked."""
    check = codecs.getincrementaldecoder("utf-8")()
    carry = b""
    done = 0
    try:
        with entry.open("rb") as file:
            pending = file.read(len(codecs.BOM_UTF8))
            if pending == codecs.BOM_UTF8:
                pending, done = b"", len(codecs.BOM_UTF8)
            while raw := pending + file.read(CHUNK_BYTES):
                pending = b""
                try:
                    check.decode(raw)
                except UnicodeDecodeError as error:
                    raise _bad_utf8(name, done + len(carry) + error.start) from None
                data = carry + raw
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                done += len(raw)
                yield data[:cut], len(raw)
            try:
                check.decode(b"", final=True)
            except UnicodeDecodeError:
                raise _bad_utf8(name, done - len(carry)) from None
    except OSError as error:
        raise ConfigurationError(
            f"{entry}: cannot read it ({error.strerror or error}); give the runner's user "
            "read access to the file (chmod a+r), or remove it"
        ) from error
    if carry:
        yield carry, 0


def _bad_utf8(name: str, byte: int) -> ConfigurationError:
    return ConfigurationError(f"{name}: not valid UTF-8 at byte {byte}; save the file as UTF-8")


_BLANK_ENDS = (b" \n", b"\t\n", b"\r\n")


def _strip_line_ends(chunk: bytes) -> bytes:
    """Each line without its trailing blanks: a few passes of replace (fast in C, and one
    is enough for the usual single blank), then line by line for long runs."""
    for _ in range(4):
        found = [ending for ending in _BLANK_ENDS if ending in chunk]
        if not found:
            return chunk
        for ending in found:
            chunk = chunk.replace(ending, b"\n")
    return b"\n".join(line.rstrip(b" \t\r") for line in chunk.split(b"\n"))


class _Hasher:
    """``discovery.checksum`` fed in chunks of whole lines: trailing blanks of each line
    and the file's trailing blank lines do not count."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.newlines = 0  # line ends held back until something follows them

    def add(self, chunk: bytes) -> None:
        chunk = _strip_line_ends(chunk)
        if not chunk.endswith(b"\n"):
            chunk = chunk.rstrip(b" \t\r")
        body = chunk.rstrip(b"\n")
        if body:
            self.sha.update(b"\n" * self.newlines)
            self.sha.update(body)
            self.newlines = 0
        self.newlines += len(chunk) - len(body)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def scan(entry: Traversable, name: str) -> Iterator[Sql | CopyIn]:
    """The file's statements in order, and each COPY ... FROM stdin with its rows; memory
    is bounded by the largest statement, never by the file."""
    with entry.open("rb") as file:
        yield from _Scanner(file, name).items()


class _Scanner:
    def __init__(self, file: IO[bytes], name: str) -> None:
        self.file = file
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def _more(self, at_least: int = CHUNK_BYTES) -> bool:
        """Read more of the file onto the buffer (dropping what was consumed)."""
        if self.eof:
            return False
        raw = self.file.read(max(at_least, CHUNK_BYTES))
        self.buf = self.buf[self.pos :] + self.decoder.decode(raw, final=not raw)
        self.pos = 0
        self.eof = not raw
        return True

    def items(self) -> Iterator[Sql | CopyIn]:
        want = CHUNK_BYTES
        while True:
            meta = _META_COMMAND.match(self.buf, self.pos)
            if meta is not None and (meta.group().endswith("\n") or self.eof):
                self._meta_command(meta)
                continue
            found = _PIECES.match(self.buf, self.pos)
            end = found.end() if found else self.pos
            if end < len(self.buf) and self.buf[end] == ";":
                want = CHUNK_BYTES
                yield from self._statement(end + 1)
                continue
            if self._more(want):
                want = max(want, 2 * (len(self.buf) - self.pos))  # a long statement: linear
                continue
            rest = self.buf[self.pos :]
            if rest.strip():  # the last statement, without ';' (or unclosed: the server says)
                yield Sql(rest, self.line)
            return

    def _meta_command(self, meta: re.Match[str]) -> None:
        """Skip pg_dump's guard lines; refuse any other psql meta-command."""
        start = self.line + self.buf.count("\n", self.pos, meta.start(1))
        if meta.group(1) not in _DUMP_GUARDS:
            raise ConfigurationError(
                f"{self.name}:{start}: \\{meta.group(1)} is a psql meta-command, which only "
                "psql understands: remove it"
            )
        self.line += self.buf.count("\n", self.pos, meta.end())
        self.pos = meta.end()

    def _statement(self, end: int) -> Iterator[Sql | CopyIn]:
        text = self.buf[self.pos : end]
        line = self.line
        self.pos = end
        self.line += text.count("\n")
        control = _TRANSACTION_CONTROL.match(text)
        if control:
            start = line + text.count("\n", 0, control.start(1))
            raise ConfigurationError(
                f"{self.name}:{start}: {control.group(1).upper()} controls the transaction, "
                "which the runner owns (one per file); remove it"
            )
        if _COPY_FROM_STDIN.match(text) is None:
            yield Sql(text, line)
            return
        self._skip_rest_of_line()
        rows = self._rows()
        yield CopyIn(text, line, self.line, rows)
        for _ in rows:  # whatever the consumer left
            pass

    def _skip_rest_of_line(self) -> None:
        """psql reads a COPY's rows from the next line on."""
        while (newline := self.buf.find("\n", self.pos)) < 0 and self._more():
            pass
        if newline < 0:
            self.pos = len(self.buf)
            return
        self.pos = newline + 1
        self.line += 1

    def _end_of_data(self) -> tuple[int, int] | None:
        """Start and end of the next ``\\.`` line (a plain find: a regex's ^ is slow)."""
        at = self.pos
        while True:
            start = self.buf.find("\\.", at)
            if start < 0:
                return None
            end = start + 2
            if self.buf.startswith("\r", end):
                end += 1
            at_line_start = start == 0 or self.buf[start - 1] == "\n"
            if at_line_start and end < len(self.buf) and self.buf[end] == "\n":
                return start, end
            if at_line_start and end == len(self.buf) and self.eof:
                return start, end
            at = start + 2

    def _rows(self) -> Iterator[bytes]:
        """The data section up to its ``\\.`` line, in chunks as read."""
        start = self.line
        while True:
            found = self._end_of_data()
            if found is not None:
                data = self.buf[self.pos : found[0]]
                self.line += data.count("\n")
                newline = self.buf.find("\n", found[1])
                self.pos = len(self.buf) if newline < 0 else newline + 1
                self.line += 1
                if data:
                    yield data.encode("utf-8")
                return
            # Hand on whole lines, keeping the last (perhaps partial) one for the marker.
            cut = self.buf.rfind("\n", self.pos) + 1
            if cut > self.pos:
                data = self.buf[self.pos : cut]
                self.pos = cut
                self.line += data.count("\n")
                yield data.encode("utf-8")
            if not self._more():
                raise ConfigurationError(
                    f"{self.name}:{start - 1}: the COPY ... FROM stdin data section has no "
                    "closing \\. line; end its rows with a line holding only \\."
                )
