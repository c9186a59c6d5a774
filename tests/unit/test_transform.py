"""What a signature covers, computed in place and streamed (issue 12): the same bytes as the copying
implementation it replaced, and the tree exactly as it was afterwards."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib

import pytest
from lxml import etree

from bus.checks import NS
from bus.dsig import find_signatures, sign_tree
from bus.dsig.profile import SUBTRACT_EXPRESSION, SUBTRACT_NSMAP
from bus.dsig.transform import signed_bytes, signed_digest, write_signed
from bus.trace import append_trace
from bus.xmlparse import parse_untrusted
from tests.conftest import Pki, q


def _copying(root: etree._Element, signature: etree._Element, *, subtract: bool, exclusive: bool) -> bytes:
    """The implementation before issue 12: a deep copy of the document, the nodes removed from it."""
    clone = copy.deepcopy(root)
    position = [index for index, node in enumerate(root.iter()) if node is signature]
    targets = [node for index, node in enumerate(clone.iter()) if index in position]
    if subtract:
        found = etree.XPath(SUBTRACT_EXPRESSION, namespaces=SUBTRACT_NSMAP)(clone)
        assert isinstance(found, list)
        targets += [n for n in found if isinstance(n, etree._Element) and n not in targets]
    for node in targets:
        parent = node.getparent()
        assert parent is not None
        if node.tail:
            previous = node.getprevious()
            if previous is not None:
                previous.tail = (previous.tail or "") + node.tail
            else:
                parent.text = (parent.text or "") + node.tail
        parent.remove(node)
    return etree.tostring(clone, method="c14n", exclusive=exclusive, with_comments=False)


def _hopped(document_bytes: bytes, pki: Pki) -> etree._ElementTree:
    """Signed by the sender, two hops with whitespace around their trace headers, countersigned."""
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.rsa.key, pki.rsa.certificate)
    for hop in ("000.00.90.H99", "000.00.00.G22"):
        element = append_trace(tree, hop, dt.datetime(2026, 11, 22, 9, 30, tzinfo=dt.UTC))
        element.tail = "\n      "  # text after a subtracted node: it must stay, and stay put
    sign_tree(tree, pki.ec.key, pki.ec.certificate)
    return parse_untrusted(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))


@pytest.mark.parametrize("subtract", [True, False])
@pytest.mark.parametrize("exclusive", [True, False])
def test_same_bytes_as_the_copying_implementation(
    document_bytes: bytes, pki: Pki, subtract: bool, exclusive: bool
) -> None:
    tree = _hopped(document_bytes, pki)
    root = tree.getroot()
    for signature in find_signatures(root):
        expected = _copying(root, signature, subtract=subtract, exclusive=exclusive)
        assert signed_bytes(root, signature, subtract=subtract, exclusive=exclusive) == expected
        digest = signed_digest(root, signature, subtract=subtract, exclusive=exclusive, hash_name="sha256")
        assert digest == hashlib.sha256(expected).digest()


def test_the_tree_is_exactly_as_it_was_afterwards(document_bytes: bytes, pki: Pki) -> None:
    tree = _hopped(document_bytes, pki)
    root = tree.getroot()
    before = etree.tostring(tree)
    nodes = list(root.iter())
    for signature in find_signatures(root):
        signed_digest(root, signature, subtract=True, exclusive=True, hash_name="sha256")
    assert etree.tostring(tree) == before
    assert list(root.iter()) == nodes  # the same elements, not copies, in the same places


def test_the_tree_is_restored_when_the_writer_fails(document_bytes: bytes, pki: Pki) -> None:
    tree = _hopped(document_bytes, pki)
    root = tree.getroot()
    before = etree.tostring(tree)

    class Broken:
        def write(self, data: bytes) -> int:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_signed(root, find_signatures(root)[0], Broken(), subtract=True, exclusive=True)
    assert etree.tostring(tree) == before


def test_canonical_bytes_are_written_in_pieces_not_built_whole(document_bytes: bytes, pki: Pki) -> None:
    """Many elements: libxml2's output buffer hands them over in chunks of a few kilobytes."""
    tree = parse_untrusted(document_bytes)
    header = tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader"))
    assert header is not None
    for n in range(5000):
        etree.SubElement(header, f"{{{NS}}}Extra").text = f"giá trị {n}"
    sign_tree(tree, pki.ec.key, pki.ec.certificate)
    sizes: list[int] = []

    class Recording:
        def write(self, data: bytes) -> int:
            sizes.append(len(data))
            return len(data)

    root = tree.getroot()
    write_signed(root, find_signatures(root)[0], Recording(), subtract=True, exclusive=True)
    assert sum(sizes) > 200_000
    assert max(sizes) < 64 * 1024


def test_a_processing_instruction_around_the_root_keeps_the_old_bytes(
    document_bytes: bytes, pki: Pki
) -> None:
    data = document_bytes.replace(b"<edXML:edXML", b'<?xml-stylesheet href="x.xsl"?>\n<edXML:edXML', 1)
    tree = parse_untrusted(data)
    sign_tree(tree, pki.ec.key, pki.ec.certificate)
    root = tree.getroot()
    [signature] = find_signatures(root)
    expected = _copying(root, signature, subtract=True, exclusive=True)
    assert b"xml-stylesheet" not in expected
    assert signed_bytes(root, signature, subtract=True, exclusive=True) == expected
