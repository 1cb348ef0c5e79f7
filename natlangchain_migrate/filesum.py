"""A migration file's checksum read in chunks, in constant memory.

The checksum is ``discovery.checksum`` of the file's whole text: SHA-256 of its UTF-8
without a byte-order mark, blind to line ends and trailing blanks. ``survey`` reads a
file once for it (the manifest, the drift check of an applied big file, a small file
with COPY data); ``ChunkHasher`` takes the bytes a scan reads anyway, so applying a
big file hashes it in the same pass (sqlscan.py).
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from natlangchain_migrate.errors import ConfigurationError, unreadable_file

if TYPE_CHECKING:
    from importlib.abc import Traversable

CHUNK_BYTES = 1 << 18  # one read from the file

# Line-wise, while hashing: a COPY ... FROM stdin (as discovery.MAYBE_COPY_DATA finds it:
# after /* comments */, over up to nine lines) or the end of a data section; inside a data
# section only its end, so that rows beginning with "copy" cost no look past their line.
_COPY_LINE = re.compile(
    rb"^[ \t]*(?:/\*(?:[^*]|\*(?!/))*\*/[ \t]*)*copy\b(?:[^;\n]*\n){0,8}?[^;\n]*?\bfrom\s+stdin\b"
    rb"|^\\\.\r?$",
    re.I | re.M,
)
_COPY_END = re.compile(rb"^\\\.\r?$", re.M)


class Survey(NamedTuple):
    """What one read of a file found: its checksum and size, and whether it has
    psql-style COPY data sections, each closed by ``\\.``."""

    checksum: str
    size: int
    copy_data: bool


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
            in_copy, closed = _sections(chunk, line, in_copy)
            copy_data = copy_data or closed
        hasher.add(chunk)
        line += chunk.count(b"\n")
    # A COPY without its "\." is left to preflight, which refuses it before anything runs.
    return Survey(hasher.hexdigest(), size, copy_data and in_copy is None)


def _sections(chunk: bytes, line: int, in_copy: int | None) -> tuple[int | None, bool]:
    """The line of the COPY left open after ``chunk`` (which starts on ``line``, inside
    the data section of the COPY on ``in_copy``), and whether a section ended in it."""
    at, closed = 0, False
    while found := (_COPY_LINE if in_copy is None else _COPY_END).search(chunk, at):
        at = found.end()
        if found.group().startswith(b"\\"):
            if in_copy is not None:
                in_copy, closed = None, True
        else:
            in_copy = line + chunk.count(b"\n", 0, found.start())
    return in_copy, closed


def unended_copy(sql: str) -> int | None:
    """The line of a COPY ... FROM stdin whose data section has no ``\\.`` line before
    the end of the file, if any (what preflight names when it refuses the file)."""
    return _sections(sql.encode(), 1, None)[0]


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
            unfinished = check.getstate()[0]  # a character the file ends inside of
            try:
                check.decode(b"", final=True)
            except UnicodeDecodeError as error:
                raise _bad_utf8(name, done - len(unfinished) + error.start) from None
    except OSError as error:
        raise unreadable_file(entry, error) from error
    if carry:
        yield carry, 0


def _bad_utf8(name: str, byte: int) -> ConfigurationError:
    return ConfigurationError(f"{name}: not valid UTF-8 at byte {byte}; save the file as UTF-8")


_BLANKS = re.compile(rb"[ \t\r]*+")
_BLANK_BYTES = frozenset(b" \t\r")
_BLANK_CHARS = b" \t\r"


def _strip_line_ends(chunk: bytes, lines: list[bytes] | None = None) -> bytes:
    """Each line that ends in the chunk without its trailing blanks (``lines``: the
    chunk split at line ends, when the caller has it). Split and stripped in C (0.5 ms
    per MB here, with blanks or without): looking first for a blank before a line end
    (``b" \\n" in chunk``) took 3 ms per MB for each kind of blank in COPY rows, whose
    tabs and spaces keep CPython's two-byte search from skipping. The chunk itself comes
    back when no line ended in a blank: ``rstrip`` then returns each line itself."""
    if lines is None:
        lines = chunk.split(b"\n")
    # All but the last, which does not end here: its blanks are decided by what follows.
    stripped = list(map(bytes.rstrip, lines, repeat(_BLANK_CHARS, len(lines) - 1)))
    stripped.append(lines[-1])
    if stripped == lines:  # each the same object: compared by identity
        return chunk
    return b"\n".join(stripped)


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


class ChunkHasher:
    """``discovery.checksum`` of bytes fed as they are read, in chunks of any size (the
    first, of at least three bytes unless the file is shorter, may start with a
    byte-order mark, which does not count).

    No chunk is held beyond its own feed: what cannot be decided yet waits, as a count
    of line ends (they count only if something follows them) and the blanks that end
    the chunk (they count only if no line end follows them)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._newlines = 0
        self._blanks = b""
        self._first = True

    def feed(self, raw: bytes, lines: list[bytes] | None = None) -> None:
        """Hash ``raw``; ``lines`` is ``raw.split(b"\\n")`` when the caller has it."""
        if self._first:
            self._first = False
            if raw.startswith(codecs.BOM_UTF8):
                raw, lines = raw[len(codecs.BOM_UTF8) :], None
        lead = _BLANKS.match(raw).end()  # type: ignore[union-attr]  # it matches empty
        if lead == len(raw):
            self._blanks += raw
            return
        if self._blanks and raw[lead] != 0x0A:  # '\n': the line goes on, its blanks count
            self._emit(self._blanks)
        self._blanks = b""
        text = _strip_line_ends(raw, lines)
        end = len(text)
        while text[end - 1] in _BLANK_BYTES:  # lead < len(raw): not all blanks
            end -= 1
        self._blanks = text[end:]
        content = end
        while content and text[content - 1] == 0x0A:
            content -= 1
        if content:
            self._emit(memoryview(text)[:content])
        self._newlines += end - content

    def _emit(self, content: bytes | memoryview) -> None:
        if self._newlines:
            self._sha.update(b"\n" * self._newlines)
            self._newlines = 0
        self._sha.update(content)

    def hexdigest(self) -> str:
        """The checksum of what was fed: the file's trailing blanks and line ends do not
        count."""
        return self._sha.hexdigest()


def refuse_bad_text(entry: Traversable, name: str) -> NoReturn:
    """Raise the error ``survey`` gives a file with a NUL byte or bad UTF-8, naming the
    line or byte (read again: only a failing scan calls it)."""
    survey(entry, name)
    raise ConfigurationError(f"{name}: it changed while it was read; run again")
