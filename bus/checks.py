"""Business checks beyond the schema: one collector gathers every problem with its path and line.

The rules come from what a provincial hub enforces on QCVN 102:2016 traffic (see docs/schemas.md):
mandatory fields, no duplicate recipients, dates as ``yyyy/MM/dd`` and not in the future, priority
0-4, and maximum lengths. Limits that real, accepted traffic exceeds (contact fields) are warnings.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from lxml import etree

from bus.errors import InvalidOrganIdError, Problem
from bus.organ_id import OrganId, normalise_organ_id

__all__ = ["NS", "VN_TZ", "Collector", "element_path", "sender_text", "source_line"]

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
# Vietnam keeps UTC+7 all year (no daylight saving since 1975), so a fixed offset is exact.
VN_TZ = dt.timezone(dt.timedelta(hours=7), "Asia/Ho_Chi_Minh")

_DATE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})$")
_DMY = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S"

T = TypeVar("T")


def element_path(element: etree._Element) -> str:
    """``/edXML/edXMLEnvelope/.../To[2]/OrganId``: local names, 1-based positions where repeated."""
    parts: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [sib for sib in parent if sib.tag == node.tag]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


def sender_text(root: etree._Element) -> str | None:
    """``MessageHeader/From/OrganId`` as written, before any check (for policy look-ups)."""
    node = root.find(
        f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}MessageHeader/{{{NS}}}From/{{{NS}}}OrganId"
    )
    return None if node is None or not node.text else node.text.strip()


def source_line(element: etree._Element) -> int | None:
    line = element.sourceline
    return line if isinstance(line, int) else None


@dataclass
class Collector:
    """Reads fields from the tree and records every problem instead of stopping at the first."""

    today: dt.date
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, code: str, where: etree._Element | str, message: str) -> None:
        self.problems.append(self._problem(code, where, message))

    def warn(self, code: str, where: etree._Element | str, message: str) -> None:
        self.warnings.append(self._problem(code, where, message))

    @staticmethod
    def _problem(code: str, where: etree._Element | str, message: str) -> Problem:
        if isinstance(where, str):
            return Problem(code, where, message)
        return Problem(code, element_path(where), message, source_line(where))

    # -- structure ---------------------------------------------------------------------------------
    def children(self, parent: etree._Element, name: str) -> list[etree._Element]:
        return parent.findall(f"{{{NS}}}{name}")

    def one(self, parent: etree._Element, name: str, *, required: bool) -> etree._Element | None:
        """The single child *name*; a problem if it is repeated, or missing while required."""
        found = self.children(parent, name)
        if len(found) > 1:
            self.error("repeated", found[1], f"{name} appears {len(found)} times; it may appear once")
        if not found:
            if required:
                self.error("missing", f"{element_path(parent)}/{name}", f"{name} is required")
            return None
        return found[0]

    def text(
        self,
        parent: etree._Element,
        name: str,
        *,
        required: bool = False,
        max_len: int | None = None,
        soft_max: bool = False,
    ) -> str | None:
        """Stripped text of child *name*, None when absent or empty (a problem if required)."""
        element = self.one(parent, name, required=required)
        if element is None:
            return None
        value = (element.text or "").strip()
        if not value:
            if required:
                self.error("empty", element, f"{name} is required and must not be empty")
            return None
        if max_len is not None and len(value) > max_len:
            report = self.warn if soft_max else self.error
            report("too-long", element, f"{name} has {len(value)} characters; at most {max_len} are allowed")
        return value

    def text_of(self, element: etree._Element, *, max_len: int) -> str | None:
        """Stripped text of *element* itself (for repeated children such as ToPlaces/Place)."""
        value = (element.text or "").strip()
        if len(value) > max_len:
            name = etree.QName(element).localname
            self.error(
                "too-long", element, f"{name} has {len(value)} characters; at most {max_len} are allowed"
            )
        return value or None

    # -- typed values ------------------------------------------------------------------------------
    def organ_id(
        self, parent: etree._Element, name: str = "OrganId", *, required: bool = True
    ) -> OrganId | None:
        element = self.one(parent, name, required=required)
        return None if element is None else self.organ_id_of(element, required=required)

    def organ_id_of(self, element: etree._Element, *, required: bool = True) -> OrganId | None:
        """The OrganId written as *element*'s text, canonicalised; short forms are a warning."""
        raw = (element.text or "").strip()
        if not raw:
            if required:
                self.error("empty", element, "OrganId is required and must not be empty")
            return None
        try:
            organ, changed = normalise_organ_id(raw)
        except InvalidOrganIdError as exc:
            self.error("organ-id", element, str(exc))
            return None
        if changed:
            self.warn("organ-id-short", element, f"OrganId {raw!r} normalised to {organ} (V.Z.Y.MXX)")
        return organ

    def date(self, parent: etree._Element, name: str, *, required: bool, not_future: bool) -> dt.date | None:
        value = self.text(parent, name, required=required)
        if value is None:
            return None
        where = self.children(parent, name)[0]
        match = _DATE.match(value)
        if match is None:
            hint = ""
            if (dmy := _DMY.match(value)) is not None:
                hint = f"; it looks like dd/MM/yyyy: write {dmy.group(3)}/{dmy.group(2)}/{dmy.group(1)}"
            self.error("date-format", where, f"{name} {value!r} must be a date as yyyy/MM/dd{hint}")
            return None
        try:
            parsed = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            self.error("date-invalid", where, f"{name} {value!r} is not a calendar date")
            return None
        if not_future and parsed > self.today:
            self.error(
                "date-future", where, f"{name} {value} is in the future (today is {self.today:%Y/%m/%d})"
            )
            return None
        return parsed

    def timestamp(
        self, parent: etree._Element, name: str = "Timestamp", *, required: bool
    ) -> dt.datetime | None:
        value = self.text(parent, name, required=required)
        if value is None:
            return None
        try:
            return dt.datetime.strptime(value, _TIMESTAMP_FORMAT).replace(tzinfo=VN_TZ)
        except ValueError:
            where = self.children(parent, name)[0]
            self.error(
                "timestamp-format", where, f"{name} {value!r} must be 'yyyy/MM/dd HH:mm:ss' (local time)"
            )
            return None

    def choice(
        self, parent: etree._Element, name: str, convert: Callable[[str], T], allowed: str
    ) -> T | None:
        """Child *name* converted by *convert*; a problem naming *allowed* when conversion fails."""
        value = self.text(parent, name)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError:
            self.error("value", self.children(parent, name)[0], f"{name} {value!r} is not allowed: {allowed}")
            return None

    def integer(self, parent: etree._Element, name: str) -> int | None:
        def non_negative(text: str) -> int:
            number = int(text)
            if number < 0:
                raise ValueError(text)
            return number

        return self.choice(parent, name, non_negative, "expected a whole number of 0 or more")


_MAX_REPORTED = 20


def unsigned_markup(root: etree._Element) -> list[Problem]:
    """Comments and processing instructions in the envelope (around or inside its root), each a problem.

    Exclusive c14n, which every signature of the profile uses, leaves them out of what is signed, so
    ``<Subject>V/v phê duyệt<!-- x --> dự án</Subject>`` verifies like ``V/v phê duyệt dự án`` while a
    recipient reading the element's first text node sees ``V/v phê duyệt``. Nothing may travel that a
    reader could take differently from what was signed (issue 10): such markup is refused, not
    stripped, so the sender learns why and the bytes it signed stay the bytes delivered.
    """
    problems: list[Problem] = []
    # Before and after the root element too: those a verifier covering the whole document (xmlsec1,
    # URI="") sees, the bus's c14n of the root does not, and <?xml-stylesheet?> runs in a browser.
    around = itertools.chain(root.itersiblings(preceding=True), root.itersiblings())
    for node in itertools.chain(around, root.iter(etree.Comment, etree.ProcessingInstruction)):
        what = "a comment" if isinstance(node, etree._Comment) else "a processing instruction"
        parent = node.getparent()
        problems.append(
            Problem(
                "unsigned-markup",
                element_path(parent) if parent is not None else "/",
                f"{what} in the envelope is refused: signatures (exclusive c14n) do not cover it, "
                "so a recipient could read the text around it differently from what was signed; "
                "remove comments and processing instructions from the envelope",
                node.sourceline if isinstance(node.sourceline, int) else None,
            )
        )
        if len(problems) == _MAX_REPORTED:
            break
    return problems
