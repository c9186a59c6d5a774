"""Appending this node's ``TraceHeader`` to an envelope, as each axis does at every hop.

The new element goes right after the last trace header (or first in ``TraceHeaderList``) and carries
no surrounding whitespace, so the text the signers covered is unchanged: a bus-profile signature
still verifies after any number of hops (docs/signatures.md).
"""

from __future__ import annotations

import datetime as dt

from lxml import etree

from bus.checks import NS, VN_TZ
from bus.dsig.sign import ensure_trace_list

__all__ = ["append_trace"]


def append_trace(tree: etree._ElementTree, organ_id: str, at: dt.datetime | None = None) -> etree._Element:
    """Append ``TraceHeader(OrganId, Timestamp)`` for this hop; *at* defaults to now (local time)."""
    trace_list = ensure_trace_list(tree.getroot())
    stamp = (at or dt.datetime.now(VN_TZ)).astimezone(VN_TZ)
    hop = etree.Element(f"{{{NS}}}TraceHeader")
    etree.SubElement(hop, f"{{{NS}}}OrganId").text = organ_id
    etree.SubElement(hop, f"{{{NS}}}Timestamp").text = stamp.strftime("%Y/%m/%d %H:%M:%S")
    existing = trace_list.findall(f"{{{NS}}}TraceHeader")
    if existing:
        existing[-1].addnext(hop)
    else:
        trace_list.insert(0, hop)
    hop.tail = None
    return hop
