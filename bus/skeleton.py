"""The skeleton of a large envelope: the received file copied with its long attachment texts replaced by
tokens, the texts left where they are (:mod:`bus.spooled` says why).

A small lexer walks the file in 1 MiB windows. It knows what an XML document's character data can be
next to: a start tag (quotes honoured, ``/>`` noted), an end tag, a comment, a CDATA section, a
processing instruction. Any other ``<!`` (a DOCTYPE, wherever it stands) is refused here, before
libxml2 sees it (bus/xmlparse.py). A run of character data is spooled when it is the whole content of
a ``ContentTransferEncoded`` element (the start tag right before it, its end tag right after), is
longer than ``spool_over`` bytes, and holds nothing but base64 characters and XML white space: such a
run means the same in the skeleton and in the original, byte for byte once line ends are normalised.
Everything else is copied unchanged; the skeleton of an envelope without such a text is the envelope.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from typing import IO

from bus.errors import UnsafeXmlError
from bus.spooled import SpooledText, SpooledTexts

__all__ = ["SPOOL_OVER", "skeleton"]

SPOOL_OVER = 64 * 1024  # an attachment text longer than this stays on disk
_WINDOW = 1024 * 1024
_IN_MEMORY = 1024 * 1024  # a skeleton larger than this (few texts spooled) is written to a temporary file
_WHITE = b" \t\n\r"
_BASE64_AND_WHITE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" + _WHITE
_IN_START_TAG = re.compile(rb"[>\"']")
_HOLDER = b"ContentTransferEncoded"
_DOCTYPE = (
    "XML with a DOCTYPE is refused: envelopes need no DTD, and DTDs carry entity attacks "
    "(billion laughs, external entities); remove the <!DOCTYPE ...> declaration"
)


@dataclass(slots=True)
class _Run:
    """What the lexer learns of a run of character data while it passes."""

    start: int
    length: int = 0
    crlf: int = 0
    breaks: int = 0
    encoded: int = 0  # base64 characters, padding included
    padding: int = 0
    spoolable: bool = True  # only base64 characters and white space so far
    base64_ok: bool = True  # ... and no character after the padding
    last_cr: bool = False

    def add(self, piece: bytes) -> None:
        self.length += len(piece)
        if not self.spoolable:
            return
        if piece.translate(None, _BASE64_AND_WHITE):
            self.spoolable = False
            return
        self.crlf += piece.count(b"\r\n") + (1 if self.last_cr and piece.startswith(b"\n") else 0)
        self.breaks += piece.count(b"\n") + piece.count(b"\r")
        self.last_cr = piece.endswith(b"\r")
        core = piece.translate(None, _WHITE)
        self.encoded += len(core)
        pad = core.find(b"=") if not self.padding else 0
        if pad >= 0:
            tail = core[pad:]
            if tail.strip(b"="):
                self.base64_ok = False
            self.padding += len(tail)

    def text(self) -> SpooledText:
        valid = self.base64_ok and self.padding <= 2 and self.encoded > 0 and self.encoded % 4 == 0
        return SpooledText(self.start, self.length, self.breaks - self.crlf, self.length - self.crlf, valid)


class _Lexer:
    def __init__(self, source: IO[bytes], size: int, out: IO[bytes], texts: SpooledTexts, spool_over: int):
        self._source, self._size, self._out, self._texts = source, size, out, texts
        self._spool_over = spool_over
        self._buf = b""
        self._base = 0  # offset in the file of _buf[0]
        self._pos = 0  # in _buf
        self._read = 0  # offset in the file of the next byte to read
        self._holder_open = False  # the last markup was a ContentTransferEncoded start tag

    def _fill(self) -> bool:
        """Read the next window; what is before ``_pos`` was written out already and is dropped."""
        if self._read >= self._size:
            return False
        self._source.seek(self._read)
        data = self._source.read(min(_WINDOW, self._size - self._read))
        if not data:
            return False
        self._read += len(data)
        self._buf = self._buf[self._pos :] + data
        self._base += self._pos
        self._pos = 0
        return True

    def run(self) -> None:
        while self._pos < len(self._buf) or self._fill():
            if self._buf[self._pos : self._pos + 1] == b"<":
                if not self._markup():
                    return
            else:
                self._text()

    def _text(self) -> None:
        run = _Run(self._base + self._pos)
        kept: list[bytes] | None = []
        while True:
            found = self._buf.find(b"<", self._pos)
            end = len(self._buf) if found < 0 else found
            piece = self._buf[self._pos : end]
            run.add(piece)
            if kept is not None:
                kept.append(piece)
                if run.length > self._spool_over:
                    kept = None
            self._pos = end
            if found >= 0 or not self._fill():
                break
        if len(self._buf) - self._pos == 1:
            self._fill()  # the "<" is the window's last byte: is it an end tag?
        closing = self._buf[self._pos : self._pos + 2] == b"</"
        if self._holder_open and closing and run.spoolable and run.length > self._spool_over:
            entry = run.text()
            self._out.write(self._texts.add(entry) + b"\n" * entry.lines)
        elif kept is not None:
            self._out.write(b"".join(kept))
        else:
            self._copy(run.start, run.length)
        self._holder_open = False

    def _copy(self, offset: int, length: int) -> None:
        """A long run that stays in the skeleton: copied from the file again, in slices."""
        end = offset + length
        while offset < end:
            self._source.seek(offset)
            piece = self._source.read(min(_WINDOW, end - offset))
            if not piece:
                break
            self._out.write(piece)
            offset += len(piece)

    def _find(self, pattern: bytes | re.Pattern[bytes], start: int) -> int:
        """The end of the match of *pattern* at or after *start* in ``_buf``, reading on; -1 at EOF."""
        while True:
            if isinstance(pattern, bytes):
                found = self._buf.find(pattern, start)
                if found >= 0:
                    return found + len(pattern)
            else:
                match = pattern.search(self._buf, start)
                if match is not None:
                    return match.end()
            # A pattern of several bytes may straddle the windows: search its length less one again.
            overlap = len(pattern) - 1 if isinstance(pattern, bytes) else 0
            start = max(start, len(self._buf) - overlap)
            before = self._pos
            if not self._fill():
                return -1
            start -= before  # _fill moved _buf's start to the old _pos

    def _markup(self) -> bool:
        """Copy the markup at ``_pos``; False when the document ends inside it (libxml2 says how)."""
        while len(self._buf) - self._pos < 9 and self._fill():
            pass
        head = self._buf[self._pos : self._pos + 9]
        holder = False
        if head.startswith(b"<!--"):
            end = self._find(b"-->", self._pos + 4)
        elif head.startswith(b"<![CDATA["):
            end = self._find(b"]]>", self._pos + 9)
        elif head.startswith(b"<!"):
            raise UnsafeXmlError(_DOCTYPE)
        elif head.startswith(b"<?"):
            end = self._find(b"?>", self._pos + 2)
        elif head.startswith(b"</"):
            end = self._find(b">", self._pos + 2)
        else:
            end = self._start_tag()
            if end >= 0 and self._buf[end - 2 : end - 1] != b"/":
                name = re.match(rb"<([^\s/>]+)", self._buf[self._pos : self._pos + 300])
                holder = name is not None and name.group(1).rpartition(b":")[2] == _HOLDER
        if end < 0:
            self._out.write(self._buf[self._pos :])
            self._pos = len(self._buf)
            return False
        self._out.write(self._buf[self._pos : end])
        self._pos = end
        self._holder_open = holder
        return True

    def _start_tag(self) -> int:
        """The end of the start tag at ``_pos``: the first ``>`` outside a quoted attribute value."""
        position = self._pos + 1
        while True:
            end = self._find(_IN_START_TAG, position)
            if end < 0:
                return -1
            stop = self._buf[end - 1 : end]
            if stop == b">":
                return end
            position = self._find(stop, end)
            if position < 0:
                return -1


def skeleton(source: IO[bytes], size: int, *, spool_over: int = SPOOL_OVER) -> tuple[IO[bytes], SpooledTexts]:
    """The skeleton of the *size* bytes of *source* (rewound, to be parsed) and the texts left in
    *source*. :class:`~bus.errors.UnsafeXmlError` for a ``<!DOCTYPE`` (or any ``<!`` declaration)."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY)  # noqa: SIM115 - returned open
    texts = SpooledTexts(source)
    try:
        _Lexer(source, size, out, texts, spool_over).run()
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out, texts
