"""The bytes a Reference covers: the document after the profile's transforms, canonicalised.

They are computed in place and streamed (issue 12, item 2): the subtracted nodes (the enveloped
signature and, with the bus profile, the trace headers and every header signature) are detached from
the tree, the canonical form of what is left is written in chunks into the digest, and the nodes are
put back exactly where they were, tails included. No copy of the document is made, and the canonical
bytes never exist whole: a 100 MB envelope is hashed through a buffer of a few kilobytes. Text that
the parser left on disk (:mod:`bus.spooled`) is streamed from there into the same digest.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from lxml import etree

from bus.dsig.profile import SUBTRACT_EXPRESSION, SUBTRACT_NSMAP
from bus.spooled import Splicer

__all__ = ["signed_bytes", "signed_digest", "write_signed"]

_SUBTRACT = etree.XPath(SUBTRACT_EXPRESSION, namespaces=SUBTRACT_NSMAP)


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _Hashing:
    """A file-like that feeds what is written to it into a hash."""

    def __init__(self, name: str) -> None:
        self.hash = hashlib.new(name)

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def _detach(element: etree._Element) -> Callable[[], None]:
    """Remove *element* and its subtree, keeping its tail text where it was (the tail is not in the
    subtree: lxml moves it with the element, so it is first added to what precedes it). Returns what
    puts it back exactly: the preceding text as it was, the element at its index, its tail with it."""
    parent = element.getparent()
    if parent is None:
        raise ValueError("the document element cannot be subtracted from itself")
    index = parent.index(element)
    previous = element.getprevious()
    before = parent.text if previous is None else previous.tail
    if element.tail:
        if previous is None:
            parent.text = (parent.text or "") + element.tail
        else:
            previous.tail = (previous.tail or "") + element.tail
    parent.remove(element)

    def restore() -> None:
        if previous is None:
            parent.text = before
        else:
            previous.tail = before
        parent.insert(index, element)

    return restore


def _targets(root: etree._Element, signature: etree._Element, *, subtract: bool) -> list[etree._Element]:
    targets = [signature]
    if subtract:
        found = _SUBTRACT(root)
        if isinstance(found, list):
            targets += [n for n in found if isinstance(n, etree._Element) and n is not signature]
    return targets


@contextmanager
def _without(targets: list[etree._Element]) -> Iterator[None]:
    """The tree without *targets* for the duration of the block, then exactly as it was (also when
    the block raises)."""
    undo: list[Callable[[], None]] = []
    try:
        for node in targets:
            undo.append(_detach(node))
        yield
    finally:
        for restore in reversed(undo):
            restore()


def _has_pi_around(root: etree._Element) -> bool:
    siblings = itertools.chain(root.itersiblings(preceding=True), root.itersiblings())
    return any(isinstance(node, etree._ProcessingInstruction) for node in siblings)


def write_signed(
    root: etree._Element,
    signature: etree._Element,
    out: _Writable,
    *,
    subtract: bool,
    exclusive: bool,
) -> None:
    """Write the canonical bytes of the document minus *signature* (enveloped) and, with *subtract*,
    minus the profile's subtracted nodes (trace headers and every header signature) into *out*, in
    chunks; the tree is left as it was."""
    if _has_pi_around(root):
        # c14n of the root element of this document would include a processing instruction before or
        # after it, which the canonical form of the root alone (what has always been signed) does not:
        # a copy of the root element alone keeps the bytes the same. Envelopes with one are refused
        # before verification (bus.checks.unsigned_markup), so only tools signing such a file get here.
        clone = copy.deepcopy(root)
        position = {index for index, node in enumerate(root.iter()) if node is signature}
        [twin] = [node for index, node in enumerate(clone.iter()) if index in position]
        root, signature = clone, twin
    with _without(_targets(root, signature, subtract=subtract)):
        # lxml-stubs lack write_c14n's exclusive argument and its file-likes (anything with write).
        whole: Any = etree.ElementTree(root)
        splicer = Splicer(out)
        whole.write_c14n(splicer, exclusive=exclusive, with_comments=False)
        splicer.close()


def signed_digest(
    root: etree._Element, signature: etree._Element, *, subtract: bool, exclusive: bool, hash_name: str
) -> bytes:
    """The *hash_name* digest (``sha256``, ``sha1``) of what :func:`write_signed` writes."""
    sink = _Hashing(hash_name)
    write_signed(root, signature, sink, subtract=subtract, exclusive=exclusive)
    return sink.hash.digest()


def signed_bytes(
    root: etree._Element, signature: etree._Element, *, subtract: bool, exclusive: bool
) -> bytes:
    """What :func:`write_signed` writes, as one ``bytes``: for tools and tests, never on the intake's
    path (an envelope's whole canonical form in memory is what streaming avoids)."""
    out = io.BytesIO()
    write_signed(root, signature, out, subtract=subtract, exclusive=exclusive)
    return out.getvalue()
