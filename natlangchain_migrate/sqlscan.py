"""Reading a migration file in pieces, in constant memory: its statements and psql-style
COPY data sections one by one, and its checksum from the same read.

A big file (a seed of reference data, pg_dump's output) is never held whole: the
checksum is the same SHA-256 as ``discovery.checksum`` of the whole text, computed a
chunk at a time as the scan reads it (filesum.py), so what is recorded is what was
applied, and the scanner finds statement ends with one regular expression
that knows strings, quoted names, comments and dollar quotes (no parse tree: pglast
on 100 MB of INSERTs needs gigabytes). Nested ``/* /* */ */`` comments are read as
flat ones, which can only move a split point inside such a comment.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, NamedTuple

from natlangchain_migrate import filesum
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.section_stream import Section

if TYPE_CHECKING:
    from importlib.abc import Traversable

# The pieces a statement is made of; a statement ends at the first ';' outside them.
# Possessive and atomic forms keep the regex engine from remembering every piece. The
# scan reads bytes: every byte of a UTF-8 character that is not ASCII is \x80-\xff, so
# such characters count as identifier characters, as PostgreSQL counts them.
_IDENT_CHAR = rb"[\w\x80-\xff]"
_TAG = rb"(?:[A-Za-z_\x80-\xff]" + _IDENT_CHAR + rb"*+)?"
_PIECES = re.compile(
    rb"(?:"
    rb"[^'\";$/\-]++"  # ordinary text
    rb"|(?<=[^\w$\x80-\xff][Ee])'(?:[^'\\]++|\\.|'')*+'"  # E'...' with backslash escapes
    rb"|'[^']*+'"  # a string ('' is two adjacent strings: the same split)
    rb"|\"[^\"]*+\""  # a quoted name
    rb"|--[^\n]*+"  # a line comment
    rb"|/\*(?>[^*]++|\*(?!/))*+\*/"  # a block comment
    rb"|(?<![\w$\x80-\xff])\$(?P<tag>" + _TAG + rb")\$(?s:.*?)\$(?P=tag)\$"  # a dollar quote
    rb"|(?<=[\w$\x80-\xff])\$|\$(?!" + _TAG + rb"\$)"  # a $ that opens no dollar quote
    rb"|/(?!\*)|-(?!-)"
    rb")*+",
    re.S,
)
_LEADING = rb"(?:\s++|--[^\n]*+\n|/\*(?>[^*]++|\*(?!/))*+\*/)*+"
_META_COMMAND = re.compile(_LEADING + rb"(?<![^\n])\\([A-Za-z]*)[^\n]*+\n?")
# pg_dump's \restrict KEY / \unrestrict KEY lines: psql's guards, nothing for the server.
_DUMP_GUARDS = frozenset({b"restrict", b"unrestrict"})
_COPY_FROM_STDIN = re.compile(_LEADING + rb"copy\b[^;]*?\bfrom\s+stdin\b", re.I | re.S)
# The line that ends a COPY data section (without its line end; \r before a \n too).
_MARKERS = (b"\\.", b"\\.\r")
_MARKER_START = b"\\.\r"  # what an unfinished line may hold and still end a section
_DECODE_BYTES = 1 << 16  # the UTF-8 check's piece: under malloc's default mmap threshold
_TRANSACTION_CONTROL = re.compile(
    _LEADING
    + rb"(begin|commit|rollback|abort|end|start\s+transaction|savepoint|release"
    + rb"|prepare\s+transaction)\b",
    re.I,
)


# A golang-migrate or prisma file's whole-file wrapper (layout_migrations.as_the_tool_runs):
# its plain BEGIN; first and plain COMMIT; last are left out of a wrapped scan.
_PLAIN_BEGIN = re.compile(
    _LEADING + rb"(?:begin(?:\s++(?:work|transaction))?|start\s++transaction)\s*+;", re.I
)
_PLAIN_COMMIT = re.compile(_LEADING + rb"(?:commit|end)(?:\s++(?:work|transaction))?\s*+;", re.I)
_ONLY_COMMENTS = re.compile(_LEADING)


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


class Scanned(NamedTuple):
    """The end of a scan: the checksum of every byte it read (``discovery.checksum``)."""

    checksum: str


def scan(
    entry: Traversable, name: str, *, hashed: bool = True, wrapper: bool = False
) -> Iterator[Sql | CopyIn | Scanned]:
    """The file's statements in order, each COPY ... FROM stdin with its rows, and last
    its checksum (empty when not ``hashed``: lint needs none); memory is bounded by the
    largest statement, never by the file. A NUL byte or bad UTF-8 is refused when met,
    naming its line or byte. With ``wrapper`` (golang-migrate's and prisma's files), a
    plain BEGIN; as the first statement and a plain COMMIT; as the last are left out:
    the body runs in the runner's transaction, as when the file is read whole. A
    ``Section`` (section_stream.py) is read from its own line of its file, each of its
    goose StatementBegin ... StatementEnd blocks one statement."""
    with entry.open("rb") as file:
        scanner = _Scanner(file, name, entry, hashed=hashed, wrapper=wrapper)
        if isinstance(entry, Section):  # a goose, dbmate or node-pg-migrate up section
            scanner.line = entry.first_line
            scanner.blocks = list(entry.blocks)
        yield from scanner.items()
        scanner.check_wrapper_closed()
        yield Scanned(scanner.hasher.hexdigest() if scanner.hasher else "")


class _Scanner:
    """The scan over a bytes buffer: a statement is decoded when it is handed on, COPY
    rows never are (the checksum's read checks that they are UTF-8)."""

    def __init__(
        self, file: IO[bytes], name: str, entry: Traversable, *, hashed: bool, wrapper: bool
    ) -> None:
        self.wrapper = wrapper
        self.begun: int | None = None  # the wrapper's BEGIN line, once met
        self.committed: int | None = None  # its COMMIT line, once met
        self.statements = 0
        self.file = file
        self.name = name
        self.entry = entry
        self.check = codecs.getincrementaldecoder("utf-8")()
        self.hasher = filesum.ChunkHasher() if hashed else None
        self.buf = b""
        self.pos = 0
        self.base = 0  # where buf starts in the file (after a byte-order mark)
        self.blocks: list[tuple[int, int]] = []  # goose's blocks ahead, as (start, end)
        self.line = 1
        self.eof = False
        self.started = False

    def _read(self, size: int) -> bytes:
        """The file's next bytes (at most ``size``; empty at its end), checked to be
        UTF-8 without NUL bytes; not hashed."""
        if self.eof:
            return b""
        # The first read holds a whole byte-order mark, if there is one.
        raw = self.file.read(max(size, 0 if self.started else 3))
        self.eof = not raw
        # ASCII after whole characters is UTF-8: no decode (and no str) needed. Else it is
        # decoded in pieces: the str of a whole read, allocated and freed at each read,
        # made malloc hand its pages back and fault them in again (1 GB: 250,000 faults).
        if not raw.isascii() or self.check.getstate()[0]:
            view = memoryview(raw)
            try:
                for start in range(0, len(raw), _DECODE_BYTES):
                    self.check.decode(view[start : start + _DECODE_BYTES])
                if self.eof:
                    self.check.decode(b"", final=True)  # the file ends inside a character
            except UnicodeDecodeError:
                filesum.refuse_bad_text(self.entry, self.name)
        if b"\0" in raw:
            filesum.refuse_bad_text(self.entry, self.name)
        return raw

    def _more(self, at_least: int = 0) -> bool:
        """Read more of the file onto the buffer (dropping what was consumed), hashing it."""
        if self.eof:
            return False
        raw = self._read(max(at_least, filesum.CHUNK_BYTES))
        if self.hasher is not None:
            self.hasher.feed(raw)
        if not self.started:
            self.started = True
            raw = raw.removeprefix(codecs.BOM_UTF8)
        self.base += self.pos
        self.buf = self.buf[self.pos :] + raw if self.pos < len(self.buf) else raw
        self.pos = 0
        return True

    def items(self) -> Iterator[Sql | CopyIn]:
        want = filesum.CHUNK_BYTES
        while True:
            meta = _META_COMMAND.match(self.buf, self.pos)
            if meta is not None and (meta.group().endswith(b"\n") or self.eof):
                self._meta_command(meta)
                continue
            found = _PIECES.match(self.buf, self.pos)
            end = found.end() if found else self.pos
            ended = end < len(self.buf) and self.buf[end] == 0x3B  # ';'
            if self.blocks and self.base + (end if ended else len(self.buf)) > self.blocks[0][0]:
                yield from self._block()  # the statement goes on into a block
                continue
            if ended:
                want = filesum.CHUNK_BYTES
                yield from self._statement(end + 1)
                continue
            if self._more(want):
                want = max(want, 2 * (len(self.buf) - self.pos))  # a long statement: linear
                continue
            rest = self.buf[self.pos :]
            if self.committed is not None and _ONLY_COMMENTS.fullmatch(rest):
                return
            if rest.strip():  # the last statement, without ';' (or unclosed: the server says)
                if self.committed is not None:
                    skipped = _ONLY_COMMENTS.match(rest).end()  # type: ignore[union-attr]
                    self._after_commit(self.line + rest.count(b"\n", 0, skipped))
                yield Sql(rest.decode("utf-8"), self.line)
            return

    def _meta_command(self, meta: re.Match[bytes]) -> None:
        """Skip pg_dump's guard lines; refuse any other psql meta-command."""
        start = self.line + self.buf.count(b"\n", self.pos, meta.start(1))
        if meta.group(1) not in _DUMP_GUARDS:
            raise ConfigurationError(
                f"{self.name}:{start}: \\{meta.group(1).decode()} is a psql meta-command, "
                "which only psql understands: remove it"
            )
        self.line += self.buf.count(b"\n", self.pos, meta.end())
        self.pos = meta.end()

    def _statement(self, end: int) -> Iterator[Sql | CopyIn]:
        text = self.buf[self.pos : end]
        line = self.line
        self.pos = end
        self.line += text.count(b"\n")
        control = _TRANSACTION_CONTROL.match(text)
        self.statements += 1
        if control and self._wrapping(text, line + text.count(b"\n", 0, control.start(1))):
            return
        if self.committed is not None:
            skipped = _ONLY_COMMENTS.match(text).end()  # type: ignore[union-attr]
            self._after_commit(line + text.count(b"\n", 0, skipped))
        if control:
            start = line + text.count(b"\n", 0, control.start(1))
            raise ConfigurationError(
                f"{self.name}:{start}: {control.group(1).decode().upper()} controls the "
                "transaction, which the runner owns (one per file); remove it"
            )
        if _COPY_FROM_STDIN.match(text) is None:
            yield Sql(text.decode("utf-8"), line)
            return
        self._skip_rest_of_line()
        rows = self._rows()
        yield CopyIn(text.decode("utf-8"), line, self.line, rows)
        for _ in rows:  # whatever the consumer left
            pass

    def _block(self) -> Iterator[Sql]:
        """What is left of a statement and the goose block it runs into, to the end of the
        block's StatementEnd line, as one statement: goose sends a block whole."""
        start, stop = self.blocks.pop(0)
        if start < self.base + self.pos:  # its StatementBegin line was COPY data
            return
        while self.base + len(self.buf) < stop and self._more(stop - self.base - len(self.buf)):
            pass
        end = max(min(stop - self.base, len(self.buf)), self.pos)
        text = self.buf[self.pos : end]
        line = self.line
        self.pos = end
        self.line += text.count(b"\n")
        self.statements += 1
        control = _TRANSACTION_CONTROL.match(text)
        if control:
            start = line + text.count(b"\n", 0, control.start(1))
            raise ConfigurationError(
                f"{self.name}:{start}: {control.group(1).decode().upper()} controls the "
                "transaction, which the runner owns (one per file); remove it"
            )
        if text:
            yield Sql(text.decode("utf-8"), line)

    def _wrapping(self, text: bytes, line: int) -> bool:
        """Whether ``text`` is the wrapper's plain BEGIN (first) or COMMIT (after it)."""
        if not self.wrapper or self.committed is not None:
            return False
        if self.begun is None and self.statements == 1 and _PLAIN_BEGIN.fullmatch(text):
            self.begun = line
            return True
        if self.begun is not None and _PLAIN_COMMIT.fullmatch(text):
            self.committed = line
            return True
        return False

    def _after_commit(self, line: int) -> None:
        """Refuse a statement after the wrapper's COMMIT: the file is one transaction."""
        if self.committed is not None:
            raise ConfigurationError(
                f"{self.name}:{line}: a statement after the COMMIT; that closes the file's "
                f"BEGIN; (line {self.begun}): a file wrapped in BEGIN; ... COMMIT; is one "
                "transaction; move this statement into the wrapper or into a file of its own"
            )

    def check_wrapper_closed(self) -> None:
        """Refuse a wrapper's BEGIN; with no COMMIT; at the file's end."""
        if self.begun is not None and self.committed is None:
            raise ConfigurationError(
                f"{self.name}:{self.begun}: BEGIN; opens the file with no COMMIT; at its end; "
                "wrap the whole file in BEGIN; ... COMMIT;, or drop the BEGIN;"
            )

    def _skip_rest_of_line(self) -> None:
        """psql reads a COPY's rows from the next line on."""
        while (newline := self.buf.find(b"\n", self.pos)) < 0 and self._more():
            pass
        if newline < 0:
            self.pos = len(self.buf)
            return
        self.pos = newline + 1
        self.line += 1

    def _rows(self) -> Iterator[bytes]:
        """The data section up to its ``\\.`` line, read by read: what the statement scan
        had read past the COPY line, then each read whole (the server takes COPY data in
        pieces of any size), but for an unfinished last line that may yet be ``\\.``,
        which waits for the next read. Each read is split at its line ends once: that
        gives the hash its lines, the line count, and the ``\\.`` line (a line equal to
        it, lengths compared first, not a byte search, which stops at every escape)."""
        start = self.line
        at = self.base + self.pos  # where raw starts in the file (goose's blocks)
        raw, self.buf, self.pos = self.buf[self.pos :], b"", 0  # hashed when it was read
        lines = raw.split(b"\n")
        held: bytes | None = b""  # the unfinished line, kept back while it may be \.
        while True:
            marker = _marker_line(lines, held)
            if marker is not None:
                size = sum(map(len, lines[:marker])) + marker  # the bytes before it
                if held and marker:
                    yield held
                if size:
                    yield raw[:size]
                self.line += marker + 1
                cut = size + len(lines[marker]) + 1
                self.buf, self.base = raw[cut:], at + cut  # read (and hashed) after it
                return
            if len(lines) > 1:
                self.line += len(lines) - 1
                if held:
                    yield held  # finished, and not \.
                tail = lines[-1]
                held = tail if _MARKER_START.startswith(tail) else None
                keep = len(tail) if held is not None else 0
            elif (
                held is not None
                and len(held) + len(raw) <= 3
                and _MARKER_START.startswith(held + raw)
            ):
                held, keep = held + raw, len(raw)
            else:
                if held:
                    yield held
                held, keep = None, 0
            if keep < len(raw):
                yield raw[: len(raw) - keep] if keep else raw  # a copy only when kept
            at += len(raw)
            raw = self._read(filesum.CHUNK_BYTES)
            if not raw:
                if held in _MARKERS:  # the file's last line
                    self.line += 1
                    self.base = at
                    return
                raise ConfigurationError(
                    f"{self.name}:{start - 1}: the COPY ... FROM stdin data section has no "
                    "closing \\. line; end its rows with a line holding only \\."
                )
            lines = raw.split(b"\n")
            if self.hasher is not None:
                self.hasher.feed(raw, lines)


def _marker_line(lines: list[bytes], held: bytes | None) -> int | None:
    """The index of the first finished line of a read that ends a data section, or
    None; ``held`` is the start of its first line, kept back from the read before (None
    when that line cannot be one)."""
    last = len(lines) - 1  # not finished in this read
    first = held + lines[0] if last and held is not None and len(lines[0]) <= 3 else None
    if first in _MARKERS:
        return 0
    found = None
    for marker in _MARKERS:
        try:
            index = lines.index(marker, 1, last)
        except ValueError:
            continue
        found = index if found is None else min(found, index)
    return found
