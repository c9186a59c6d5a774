"""Long attachment texts left on disk (bus/spooled.py, bus/skeleton.py): the tree, its checks, its
signatures and its serialisation are what they would be with the text in memory, byte for byte; and a
large envelope goes through them in bounded memory (issue 12, item 2)."""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable

import pytest
from lxml import etree

from bus.dsig import TrustStore, sign_tree, verify_tree
from bus.envelope import ParsedEnvelope, check_tree
from bus.errors import EnvelopeInvalidError, SignatureError, UnsafeXmlError
from bus.spooled import PREFIX, Received, Splicer, write_envelope
from bus.xmlparse import parse_received, parse_untrusted
from tests.conftest import TODAY, Pki, q
from tests.factory import make_document

SPOOL_OVER = 4096  # small, so that the tests' attachments are spooled
ATTACHMENT = "AttachmentEncoded/Attachment/ContentTransferEncoded"


def _lines(data: bytes, width: int, end: bytes) -> bytes:
    return end.join(data[i : i + width] for i in range(0, len(data), width)) + end


def _envelope(encoded: bytes, *, second: bytes | None = None, holder_attrs: str = "") -> bytes:
    """The factory's document with *encoded* as its attachment text (and a second attachment)."""
    data = make_document("000.00.01.H99", ["000.00.21.H99"], 7, padding=12)
    head, _, rest = data.partition(b"<edXML:ContentTransferEncoded>")
    _, _, tail = rest.partition(b"</edXML:ContentTransferEncoded>")
    out = head + f"<edXML:ContentTransferEncoded{holder_attrs}>".encode() + encoded
    out += b"</edXML:ContentTransferEncoded>" + tail
    if second is not None:
        extra = (
            b"<edXML:Attachment><edXML:ContentId>cid:2</edXML:ContentId>"
            b"<edXML:AttachmentName>phu-luc.pdf</edXML:AttachmentName>"
            b"<edXML:ContentTransferEncoded>" + second + b"</edXML:ContentTransferEncoded></edXML:Attachment>"
        )
        out = out.replace(b"</edXML:AttachmentEncoded>", extra + b"</edXML:AttachmentEncoded>")
    return out


RANDOM = bytes(random.Random(12).randrange(256) for _ in range(30_000))
B64 = base64.b64encode(RANDOM)
CASES: dict[str, bytes] = {
    "one line": _envelope(B64),
    "LF every 76": _envelope(_lines(B64, 76, b"\n")),
    "CRLF every 76": _envelope(b"\r\n" + _lines(B64, 76, b"\r\n")),
    "lone CR": _envelope(_lines(B64, 64, b"\r")),
    "spaces and tabs": _envelope(b"  \t" + _lines(B64, 100, b" \t ")),
    "two attachments": _envelope(B64, second=_lines(base64.b64encode(RANDOM[:9000]), 76, b"\n")),
    "a short second one": _envelope(B64, second=base64.b64encode(b"ngan")),
    "'>' in an attribute": _envelope(B64, holder_attrs=' note="a > b" other=\'"x"\''),
    "not base64": _envelope(B64[:-8] + b"*!*=AAAA"),
    "padding inside": _envelope(B64[:400] + b"==" + B64[402:]),
    "length not four": _envelope(B64 + b"A"),
    "entity in it": _envelope(B64[:100] + b"&#65;" + B64[101:]),
}


def _received(data: bytes) -> Received:
    return Received.of_bytes(data)


@pytest.mark.parametrize("name", list(CASES))
def test_the_tree_reads_and_writes_as_if_the_text_were_in_memory(name: str) -> None:
    data = CASES[name]
    whole = parse_untrusted(data)
    tree, texts = parse_received(_received(data), spool_over=SPOOL_OVER)
    holders = tree.findall(q(ATTACHMENT))
    if name not in ("not base64", "entity in it"):
        assert (holders[0].text or "").startswith(PREFIX.decode())  # left on disk
    with texts.active():
        out = io.BytesIO()
        write_envelope(tree, out)
        assert out.getvalue() == etree.tostring(whole, encoding="UTF-8", xml_declaration=True)
        canonical = io.BytesIO()
        splicer = Splicer(canonical)
        tree.write_c14n(splicer, exclusive=True, with_comments=False)  # type: ignore[call-arg,arg-type]
        splicer.close()
        assert canonical.getvalue() == etree.tostring(whole, method="c14n", exclusive=True)
        # Line numbers after the attachment are the file's, as libxml2 counts them.
        assert [e.sourceline for e in tree.iter()] == [e.sourceline for e in whole.iter()]
        assert _outcome(lambda: check_tree(tree, today=TODAY)) == _outcome(
            lambda: check_tree(whole, today=TODAY)
        )


def _outcome(check: Callable[[], ParsedEnvelope]) -> object:
    """The model read (sizes of attachments too), or the problems found."""
    try:
        return check().message
    except EnvelopeInvalidError as refused:
        return refused.problems


def test_garbage_in_a_spooled_attachment_is_refused_like_any() -> None:
    tree, texts = parse_received(_received(CASES["not base64"]), spool_over=SPOOL_OVER)
    with texts.active(), pytest.raises(EnvelopeInvalidError, match="not valid base64"):
        check_tree(tree, today=TODAY)


def test_signatures_cover_the_text_left_on_disk(pki: Pki) -> None:
    whole = parse_untrusted(CASES["LF every 76"])
    sign_tree(whole, pki.ec.key, pki.ec.certificate)
    signed = etree.tostring(whole, encoding="UTF-8", xml_declaration=True)
    trust = TrustStore([pki.ca.certificate])
    tree, texts = parse_received(_received(signed), spool_over=SPOOL_OVER)
    with texts.active():
        assert len(verify_tree(tree, trust)) == 1
        sign_tree(tree, pki.rsa.key, pki.rsa.certificate)  # the bus's countersignature, spooled
        out = io.BytesIO()
        write_envelope(tree, out)
    assert len(verify_tree(parse_untrusted(out.getvalue()), trust)) == 2
    # One base64 character changed deep in the attachment: the digest streamed from disk sees it.
    at = signed.index(b"ContentTransferEncoded>") + 5000
    flipped = signed[:at] + (b"B" if signed[at : at + 1] != b"B" else b"C") + signed[at + 1 :]
    tree, texts = parse_received(_received(flipped), spool_over=SPOOL_OVER)
    with texts.active(), pytest.raises(SignatureError, match="DigestValue does not match"):
        verify_tree(tree, trust)


def test_a_doctype_anywhere_in_a_large_envelope_is_refused_unread() -> None:
    data = CASES["one line"].replace(
        b"<edXML:edXMLEnvelope>", b"<!DOCTYPE x [<!ENTITY a 'b'>]><edXML:edXMLEnvelope>"
    )
    with pytest.raises(UnsafeXmlError, match="DOCTYPE"):
        parse_received(_received(data), spool_over=SPOOL_OVER)


def test_markup_that_only_looks_like_an_attachment_stays_what_it_is() -> None:
    """A comment and a CDATA section holding a would-be attachment, and a holder element of another
    namespace: nothing of them is left on disk, and the tree is the file's."""
    fake = b"<edXML:ContentTransferEncoded>" + B64 + b"</edXML:ContentTransferEncoded>"
    data = CASES["one line"].replace(
        b"<edXML:Subject>", b"<!--" + fake + b"--><edXML:Subject><![CDATA[" + fake + b"]]>"
    )
    data = data.replace(
        b"</edXML:edXML>",
        b'<x:ContentTransferEncoded xmlns:x="urn:other">'
        + B64
        + b"</x:ContentTransferEncoded></edXML:edXML>",
    )
    whole = parse_untrusted(data)
    tree, texts = parse_received(_received(data), spool_over=SPOOL_OVER)
    with texts.active():
        out = io.BytesIO()
        write_envelope(tree, out)
    assert out.getvalue() == etree.tostring(whole, encoding="UTF-8", xml_declaration=True)
    assert texts.entries == {}  # the lexer's guess was not libxml2's: the envelope was read whole


@pytest.mark.parametrize("size", [1, 3, 7, 64, 4096])
def test_tokens_split_across_writes_are_still_found(size: int) -> None:
    data = CASES["CRLF every 76"]
    tree, texts = parse_received(_received(data), spool_over=SPOOL_OVER)
    with texts.active():
        whole = io.BytesIO()
        write_envelope(tree, whole)
        pieces = io.BytesIO()
        splicer = Splicer(pieces)
        serialised = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)  # tokens in it
        for at in range(0, len(serialised), size):
            splicer.write(serialised[at : at + size])
        splicer.close()
    assert pieces.getvalue() == whole.getvalue()


def _peak_growth(work: Callable[[], object]) -> int:
    """Peak RSS growth of this process while *work* runs (Linux: /proc/self/clear_refs)."""

    def field(name: str) -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(name + ":"))

    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")
    base = field("VmRSS")
    work()
    return field("VmHWM") - base


def test_a_large_envelope_is_checked_signed_and_written_in_bounded_memory(pki: Pki) -> None:
    """40 MB: parsed, checked, verified, countersigned and written out with a few MB of growth, where
    the text in libxml2's tree (and its serialisations) cost three times the envelope."""
    raw = make_document("000.00.01.H99", ["000.00.21.H99"], 9, padding=40 * 1024 * 1024)
    whole = parse_untrusted(raw)
    del raw
    sign_tree(whole, pki.ec.key, pki.ec.certificate)
    signed = io.BytesIO()
    whole.write(signed, encoding="UTF-8", xml_declaration=True)
    del whole
    received = Received(signed, signed.getbuffer().nbytes, "-")
    trust = TrustStore([pki.ca.certificate])

    class Discard:
        size = 0

        def write(self, data: bytes) -> int:
            self.size += len(data)
            return len(data)

    discard = Discard()

    def accept() -> None:
        tree, texts = parse_received(received)
        with texts.active():
            check_tree(tree, today=TODAY)
            verify_tree(tree, trust)
            sign_tree(tree, pki.rsa.key, pki.rsa.certificate)
            write_envelope(tree, discard)

    assert _peak_growth(accept) < 12 * 1024 * 1024
    assert discard.size > received.size
