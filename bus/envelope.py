"""Reading an envelope end to end: hardened parse → schema → business checks → typed model.

:func:`read_envelope` is what intake calls. It raises :class:`~bus.errors.EnvelopeInvalidError` with
**every** problem found, or returns a :class:`ParsedEnvelope` holding the tree (for signing and
tracing) and the typed message.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from lxml import etree

from bus.checks import NS, VN_TZ, Collector, source_line, unsigned_markup
from bus.errors import EnvelopeInvalidError, Problem
from bus.model import DocumentEnvelope, StatusMessage
from bus.reading import read_document, read_status
from bus.schema import schema_problems
from bus.xmlparse import DEFAULT_LIMITS, XmlLimits, parse_untrusted

__all__ = ["EnvelopeKind", "ParsedEnvelope", "check_tree", "detect_kind", "read_envelope"]


class EnvelopeKind(enum.StrEnum):
    DOCUMENT = "document"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    kind: EnvelopeKind
    tree: etree._ElementTree
    message: DocumentEnvelope | StatusMessage
    warnings: tuple[Problem, ...]


def detect_kind(tree: etree._ElementTree) -> EnvelopeKind:
    """A status message has ``MessageHeader/StatusCode``; anything else is read as a document."""
    root = tree.getroot()
    if root.tag != f"{{{NS}}}edXML":
        found = etree.QName(root)
        raise EnvelopeInvalidError(
            [
                Problem(
                    "root",
                    "/" + found.localname,
                    f"root element is {{{found.namespace or ''}}}{found.localname}; "
                    f"expected edXML in namespace {NS}",
                    source_line(root),
                )
            ]
        )
    status = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}MessageHeader/{{{NS}}}StatusCode")
    return EnvelopeKind.STATUS if status is not None else EnvelopeKind.DOCUMENT


def check_tree(tree: etree._ElementTree, *, today: dt.date | None = None) -> ParsedEnvelope:
    """Schema and business checks of an already parsed tree."""
    kind = detect_kind(tree)
    problems = unsigned_markup(tree.getroot()) or schema_problems(tree, kind.value)
    if problems:
        raise EnvelopeInvalidError(problems)
    collector = Collector(today=today or dt.datetime.now(VN_TZ).date())
    reader = read_status if kind is EnvelopeKind.STATUS else read_document
    message = reader(tree.getroot(), collector)
    if message is None:
        raise EnvelopeInvalidError(collector.problems)
    return ParsedEnvelope(kind, tree, message, tuple(collector.warnings))


def read_envelope(
    data: bytes, *, today: dt.date | None = None, limits: XmlLimits = DEFAULT_LIMITS
) -> ParsedEnvelope:
    """Parse untrusted *data* and check it; raises an :class:`~bus.errors.InputError` subclass."""
    return check_tree(parse_untrusted(data, limits), today=today)
