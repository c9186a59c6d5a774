"""The bytes a Reference covers: the document after the profile's transforms, canonicalised."""

from __future__ import annotations

import copy

from lxml import etree

from bus.dsig.profile import SUBTRACT_EXPRESSION, SUBTRACT_NSMAP

__all__ = ["signed_bytes"]

_SUBTRACT = etree.XPath(SUBTRACT_EXPRESSION, namespaces=SUBTRACT_NSMAP)


def _detach(element: etree._Element) -> None:
    """Remove *element* and its subtree but keep its tail text where it was (it is not in the subtree)."""
    parent = element.getparent()
    if parent is None:
        raise ValueError("the document element cannot be subtracted from itself")
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def signed_bytes(
    root: etree._Element, signature: etree._Element, *, subtract: bool, exclusive: bool
) -> bytes:
    """Canonical bytes of the document minus *signature* (enveloped) and, with *subtract*, minus the
    profile's subtracted nodes (trace headers and every header signature)."""
    clone = copy.deepcopy(root)
    # Find the signature in the clone by its position, not by searching: the verifier has already
    # pinned *signature* to its one allowed place.
    position = [index for index, node in enumerate(root.iter()) if node is signature]
    targets = [node for index, node in enumerate(clone.iter()) if index in position]
    if subtract:
        subtracted = _SUBTRACT(clone)
        if isinstance(subtracted, list):
            targets += [n for n in subtracted if isinstance(n, etree._Element) and n not in targets]
    for node in targets:
        _detach(node)
    return etree.tostring(clone, method="c14n", exclusive=exclusive, with_comments=False)
