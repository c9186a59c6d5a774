"""An envelope's large attachment texts left on disk, so that any size passes in bounded memory.

A scanned dossier is a few elements and one huge base64 text (``ContentTransferEncoded``). libxml2
holds such a text whole in the tree, and every serialisation of it (exclusive c14n into a digest,
writing the envelope out) makes two more whole copies inside libxml2 before the first byte reaches
the writer (lxml 6.1, libxml2 2.14: +200 MB for a 100 MB text, streamed writer or not). Three copies
of a 100 MB envelope is more than issue 12 allows (2x), so libxml2 never gets those texts:

* :mod:`bus.skeleton` copies the received file to a *skeleton* in which each long attachment text
  made only of base64 characters and XML white space is replaced by a random token (and its line
  breaks, so that libxml2's line numbers stay true); the text itself stays in the received file.
* The checks read what they need of it from :class:`SpooledText` (is it base64, how long).
* Whatever serialises the tree (c14n for a signature's digest, the envelope written out for
  delivery) writes through a :class:`Splicer`, which streams the text from the received file, in
  slices, where its token stands.

Such a text's canonical form is its bytes with line ends normalised (XML 1.0 §2.11): base64
characters, spaces, tabs and line feeds need no escaping in c14n or in serialised XML, so what the
splicer writes is byte for byte what libxml2 would have written. The texts of the envelope being
accepted are found through a context variable (:meth:`SpooledTexts.active`): tokens are random, live
only while their envelope is handled, and a token in any other place is left as the text it is.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Protocol

from lxml import etree

__all__ = [
    "PREFIX",
    "TOKEN_LEN",
    "Received",
    "Splicer",
    "SpooledText",
    "SpooledTexts",
    "Written",
    "spooled_text",
    "write_envelope",
]

PREFIX = b"BUSSPOOLED"
TOKEN_LEN = len(PREFIX) + 32  # 16 random bytes in hex
_SLICE = 1024 * 1024
_ACTIVE: contextvars.ContextVar[SpooledTexts | None] = contextvars.ContextVar("spooled_texts", default=None)


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Received:
    """An envelope as it arrived: in a file (an HTTP body spooled to disk) or in memory, with its size
    and SHA-256 (hex). Readers seek where they read."""

    file: IO[bytes]
    size: int
    sha256: str

    @classmethod
    def of_bytes(cls, data: bytes) -> Received:
        return cls(io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, slots=True)
class SpooledText:
    """One text left in the received file: ``offset`` and ``length`` of its raw bytes there, the
    ``lines`` breaks it holds (after line-end normalisation), its length ``chars`` as the tree would
    have held it, and whether it is valid base64 (``base64_ok``)."""

    offset: int
    length: int
    lines: int
    chars: int
    base64_ok: bool


@dataclass(slots=True)
class SpooledTexts:
    """The texts of one envelope left in *source*, by token (bytes)."""

    source: IO[bytes]
    entries: dict[bytes, SpooledText] = field(default_factory=dict)

    def add(self, entry: SpooledText) -> bytes:
        token = PREFIX + secrets.token_hex(16).encode("ascii")
        self.entries[token] = entry
        return token

    def stream(self, entry: SpooledText, write: Callable[[bytes], object]) -> None:
        """The text as the tree would hold it, in slices: CR LF and a lone CR become LF."""
        position, end = entry.offset, entry.offset + entry.length
        pending_cr = False
        while position < end:
            self.source.seek(position)
            piece = self.source.read(min(_SLICE, end - position))
            if not piece:
                raise OSError(f"the received envelope ends at {position} bytes, before its text does")
            position += len(piece)
            if pending_cr and piece.startswith(b"\n"):
                piece = piece[1:]
            pending_cr = piece.endswith(b"\r")
            if b"\r" in piece:
                piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            write(piece)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make these texts the ones checks and serialisers find while the block runs (in this task and
        in what it starts: asyncio tasks and threads copy the context)."""
        reset = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(reset)


def spooled_text(element: etree._Element) -> SpooledText | None:
    """What the active texts hold for *element*'s text, if it is a token of theirs."""
    texts = _ACTIVE.get()
    text = element.text
    if texts is None or not texts.entries or text is None or not text.startswith(PREFIX.decode()):
        return None
    return texts.entries.get(text[:TOKEN_LEN].encode("ascii", "replace"))


class Splicer:
    """A file-like that writes through to *out*, with the active texts streamed where their tokens
    stand (and the line breaks the skeleton kept after each token dropped). :meth:`close` writes what
    it held back; it does not close *out*."""

    def __init__(self, out: _Writable) -> None:
        self._out = out
        texts = _ACTIVE.get()
        self._texts = texts if texts is not None and texts.entries else None
        self._held = b""
        self._skip = 0  # line breaks after the last token, still to drop

    def write(self, data: bytes) -> int:
        if self._texts is None:
            self._out.write(data)
            return len(data)
        buf, position = (self._held + data if self._held else data), 0
        self._held = b""
        while True:
            if self._skip:
                dropped = min(self._skip, len(buf) - position)
                if buf[position : position + dropped] != b"\n" * dropped:
                    raise ValueError("a spooled text's token is not followed by its line breaks")
                position, self._skip = position + dropped, self._skip - dropped
                if self._skip:
                    return len(data)
            found = buf.find(PREFIX, position)
            if found < 0:
                end = len(buf) - _partial_prefix(buf, position)
                self._out.write(buf[position:end])
                self._held = buf[end:]
                return len(data)
            if len(buf) - found < TOKEN_LEN:
                self._out.write(buf[position:found])
                self._held = buf[found:]
                return len(data)
            self._out.write(buf[position:found])
            entry = self._texts.entries.get(buf[found : found + TOKEN_LEN])
            if entry is None:  # text that looks like a token: it is what it is
                self._out.write(PREFIX)
                position = found + len(PREFIX)
                continue
            self._texts.stream(entry, self._out.write)
            self._skip = entry.lines
            position = found + TOKEN_LEN

    def close(self) -> None:
        if self._skip:
            raise ValueError("the output ended inside a spooled text's line breaks")
        if self._held:
            self._out.write(self._held)
            self._held = b""


def _partial_prefix(buf: bytes, start: int) -> int:
    """How many bytes at the end of *buf* (from *start*) could begin a token."""
    for size in range(min(len(PREFIX) - 1, len(buf) - start), 0, -1):
        if buf.endswith(PREFIX[:size]):
            return size
    return 0


@dataclass(frozen=True, slots=True)
class Written:
    sha256: str
    size: int


class _Digesting:
    def __init__(self, out: _Writable) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def write_envelope(tree: etree._ElementTree, out: _Writable) -> Written:
    """Serialise *tree* into *out* (UTF-8, with its XML declaration: the bytes ``etree.tostring`` makes),
    the active texts streamed in, and return the SHA-256 and size of what was written."""
    digesting = _Digesting(out)
    splicer = Splicer(digesting)
    tree.write(splicer, encoding="UTF-8", xml_declaration=True)  # type: ignore[arg-type]  # any file-like
    splicer.close()
    return Written(digesting.hash.hexdigest(), digesting.size)
