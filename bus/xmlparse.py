"""The one parser for untrusted XML.

Every byte string that reaches the bus from outside goes through :func:`parse_untrusted`. It refuses,
before libxml2 sees the document:

* a document type declaration (``<!DOCTYPE``): no DTD means no entity declarations, so no billion
  laughs, no quadratic blow-up and no external entity (file or network), CWE-776 / CWE-611;
* an encoding other than UTF-8: the prolog scan below reads bytes, and QCVN 102:2016 envelopes are
  UTF-8 (a UTF-16 document could hide a DOCTYPE from a byte scan);
* a body larger than ``limits.max_bytes``.

libxml2 is then told, as a second line of defence, not to load DTDs, not to resolve entities and not
to touch the network. After parsing, element nesting deeper than ``limits.max_depth`` is refused.
Envelopes are shallow (depth 8 or so), so the default of 64 leaves room for extensions only.

:func:`parse_received` parses an envelope that arrived in a file (an HTTP body spooled to disk) with
the same defences; a large one goes through its skeleton (:mod:`bus.skeleton`), its long attachment
texts left on disk (:mod:`bus.spooled`), and a ``<!DOCTYPE`` anywhere in it is refused unread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO

from lxml import etree

from bus.checks import NS
from bus.errors import MalformedXmlError, UnsafeXmlError, XmlTooLargeError
from bus.skeleton import SPOOL_OVER, skeleton
from bus.spooled import PREFIX, TOKEN_LEN, Received, SpooledTexts

__all__ = ["DEFAULT_LIMITS", "XmlLimits", "parse_received", "parse_untrusted"]


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Bounds for one untrusted document.

    ``max_bytes``: the body is refused unread above this size (the HTTP layer also caps it).
    ``max_depth``: nesting deeper than this is refused (a deep document is a stack/CPU attack).
    """

    max_bytes: int = 128 * 1024 * 1024
    max_depth: int = 64


DEFAULT_LIMITS = XmlLimits()

_BOMS_NOT_UTF8 = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")
_XML_DECL_ENCODING = re.compile(rb"""^<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_PROLOG_SKIP = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)


def _check_prolog(data: bytes) -> None:
    """Refuse non-UTF-8 input and any DOCTYPE in the prolog (the only place one may stand)."""
    if data.startswith(_BOMS_NOT_UTF8) or (len(data) >= 2 and (data[0] == 0 or data[1] == 0)):
        raise MalformedXmlError("XML must be encoded as UTF-8 (QCVN 102:2016); this looks like UTF-16/32")
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    decl = _XML_DECL_ENCODING.match(body)
    if decl and decl.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        name = decl.group(1).decode("ascii")
        raise MalformedXmlError(f"XML declares encoding {name!r}; envelopes must be UTF-8 (QCVN 102:2016)")
    pos = 0
    # The prolog is XMLDecl? Misc* (doctypedecl Misc*)?, Misc = comment | PI | space (XML 1.0 §2.8).
    while (m := _PROLOG_SKIP.match(body, pos)) is not None:
        pos = m.end()
    if body.startswith(b"<!DOCTYPE", pos) or body.startswith(b"<!doctype", pos):
        raise UnsafeXmlError(
            "XML with a DOCTYPE is refused: envelopes need no DTD, and DTDs carry entity attacks "
            "(billion laughs, external entities); remove the <!DOCTYPE ...> declaration"
        )


def _max_depth_exceeded(root: etree._Element, limit: int) -> bool:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False


def _new_parser() -> etree.XMLParser:
    # huge_tree only lifts libxml2's 10 MB cap on one text node (base64 attachments); entity
    # amplification cannot happen because no DTD gets this far.
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=True,
        remove_blank_text=False,
        collect_ids=False,
    )


def _too_large(size: int, limits: XmlLimits) -> XmlTooLargeError:
    return XmlTooLargeError(f"XML body of {size} bytes exceeds the limit of {limits.max_bytes} bytes")


def _parsed(source: bytes | IO[bytes], limits: XmlLimits) -> etree._ElementTree:
    try:
        if isinstance(source, bytes):
            tree = etree.ElementTree(etree.fromstring(source, _new_parser()))
        else:
            tree = etree.parse(source, _new_parser())
    except etree.XMLSyntaxError as exc:
        if "Excessive depth" in str(exc.msg):
            raise UnsafeXmlError(f"XML nests elements deeper than {limits.max_depth} levels") from exc
        line = f" at line {exc.lineno}" if exc.lineno else ""
        raise MalformedXmlError(f"not well-formed XML{line}: {exc.msg}") from exc
    # Defence in depth: the prolog scan should have caught it (lxml-stubs lack DocInfo.doctype).
    if getattr(tree.docinfo, "doctype", ""):
        raise UnsafeXmlError("XML with a DOCTYPE is refused")
    if _max_depth_exceeded(tree.getroot(), limits.max_depth):
        raise UnsafeXmlError(f"XML nests elements deeper than {limits.max_depth} levels")
    return tree


def parse_untrusted(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> etree._ElementTree:
    """Parse *data* as untrusted XML, or raise :class:`UnsafeXmlError` (:class:`XmlTooLargeError` over
    ``limits.max_bytes``) / :class:`MalformedXmlError`."""
    if len(data) > limits.max_bytes:
        raise _too_large(len(data), limits)
    if not data.strip():
        raise MalformedXmlError("empty body: expected an edXML document")
    _check_prolog(data)
    return _parsed(data, limits)


def parse_received(
    received: Received, limits: XmlLimits = DEFAULT_LIMITS, *, spool_over: int = SPOOL_OVER
) -> tuple[etree._ElementTree, SpooledTexts]:
    """Parse an envelope as :func:`parse_untrusted` does, from where it arrived, and return the texts
    left on disk with the tree (activate them while the tree is checked, signed or written:
    :meth:`~bus.spooled.SpooledTexts.active`). An envelope up to *spool_over* bytes is read whole."""
    if received.size > limits.max_bytes:
        raise _too_large(received.size, limits)
    received.file.seek(0)
    if received.size <= spool_over:
        return parse_untrusted(received.file.read(), limits), SpooledTexts(received.file)
    head = received.file.read(64 * 1024)
    if not head.strip():
        raise MalformedXmlError("empty body: expected an edXML document")
    _check_prolog(head)  # the encoding; a DOCTYPE anywhere, the skeleton refuses
    source, texts = skeleton(received.file, received.size, spool_over=spool_over)
    with source:
        tree = _parsed(source, limits)
    if _settled(tree, texts):
        return tree, texts
    # The lexer and libxml2 disagree about where a text stands (never seen; a holder element of another
    # namespace would do it): read the envelope whole instead, correct if not lean.
    received.file.seek(0)
    return parse_untrusted(received.file.read(), limits), SpooledTexts(received.file)


def _settled(tree: etree._ElementTree, texts: SpooledTexts) -> bool:
    """Whether every token stands where the skeleton put it, and nowhere else: the whole text of an
    edXML ``ContentTransferEncoded`` that has no child, each token once. (A text of the sender's own
    that only looks like a token is no token: it is not among *texts*.)"""
    holder = f"{{{NS}}}ContentTransferEncoded"
    marker = PREFIX.decode()
    found: list[bytes] = []
    for node in tree.getroot().iter():
        values: list[tuple[str, str]] = [("text", node.text or ""), ("tail", node.tail or "")]
        if isinstance(node.tag, str):
            values += [("attribute", str(a)) for a in node.attrib.values()]
        for where, value in values:
            at = value.find(marker)
            while at >= 0:
                token = value[at : at + TOKEN_LEN].encode("ascii", "replace")
                entry = texts.entries.get(token)
                if entry is not None:
                    if where != "text" or at or node.tag != holder or len(node):
                        return False
                    if value[TOKEN_LEN:] != "\n" * entry.lines:
                        return False
                    found.append(token)
                at = value.find(marker, at + 1)
    return len(found) == len(set(found)) and set(found) == set(texts.entries)
