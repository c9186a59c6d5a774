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

from bus.checks import NS, VN_TZ, Collector, element_path, source_line
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


_MAX_REPORTED = 20


def unsigned_markup(root: etree._Element) -> list[Problem]:
    """Comments and processing instructions inside the envelope, each a problem.

    Exclusive c14n, which every signature of the profile uses, leaves them out of what is signed, so
    ``<Subject>V/v phê duyệt<!-- x --> dự án</Subject>`` verifies like ``V/v phê duyệt dự án`` while a
    recipient reading the element's first text node sees ``V/v phê duyệt``. Nothing may travel that a
    reader could take differently from what was signed (issue 10): such markup is refused, not
    stripped, so the sender learns why and the bytes it signed stay the bytes delivered.
    """
    problems: list[Problem] = []
    for node in root.iter(etree.Comment, etree.ProcessingInstruction):
        what = "a comment" if isinstance(node, etree._Comment) else "a processing instruction"
        parent = node.getparent()
        problems.append(
            Problem(
                "unsigned-markup",
                element_path(parent if parent is not None else root),
                f"{what} inside the envelope is refused: signatures (exclusive c14n) do not cover it, "
                "so a recipient could read the text around it differently from what was signed; "
                "remove comments and processing instructions from the envelope",
                node.sourceline if isinstance(node.sourceline, int) else None,
            )
        )
        if len(problems) == _MAX_REPORTED:
            break
    return problems


def read_envelope(
    data: bytes, *, today: dt.date | None = None, limits: XmlLimits = DEFAULT_LIMITS
) -> ParsedEnvelope:
    """Parse untrusted *data* and check it; raises an :class:`~bus.errors.InputError` subclass."""
    return check_tree(parse_untrusted(data, limits), today=today)
