"""The hardened parser refuses every classic XML attack with a clear error, in bounded time and memory.

One test per attack (signxml keeps a defusedxml folder of the same kinds). Each attack would succeed
against a default parser: the control test at the end shows the payloads are real.
"""

from __future__ import annotations

import resource
import time
import unicodedata

import pytest
from lxml import etree

from bus.errors import MalformedXmlError, UnsafeXmlError
from bus.xmlparse import XmlLimits, parse_untrusted

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">&lol9;</edXML>"""

QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]><edXML>'
    + b"&a;" * 50_000
    + b"</edXML>"
)

EXTERNAL_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">&secret;</edXML>"""

EXTERNAL_NETWORK = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY remote SYSTEM "http://127.0.0.1:9/evil.xml">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">&remote;</edXML>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE edXML SYSTEM "http://127.0.0.1:9/evil.dtd">
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"/>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"/>"""

DOCTYPE_AFTER_COMMENT = b"""<?xml version="1.0"?>
<!-- a comment first --><?pi x?>
<!doctype edXML [<!ENTITY a "b">]><edXML>&a;</edXML>"""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(QUADRATIC, id="quadratic-blowup"),
        pytest.param(EXTERNAL_FILE, id="external-entity-file"),
        pytest.param(EXTERNAL_NETWORK, id="external-entity-network"),
        pytest.param(EXTERNAL_DTD, id="external-dtd"),
        pytest.param(PARAMETER_ENTITY, id="parameter-entity"),
        pytest.param(DOCTYPE_AFTER_COMMENT, id="doctype-after-comment-lowercase"),
    ],
)
def test_dtd_attacks_are_refused_in_bounded_time_and_memory(payload: bytes) -> None:
    before = _peak_rss_mb()
    started = time.process_time()
    with pytest.raises(UnsafeXmlError, match="DOCTYPE is refused"):
        parse_untrusted(payload)
    # Bounded: refused by a prolog scan, long before any expansion (generous bounds, not a benchmark).
    assert time.process_time() - started < 1.0
    assert _peak_rss_mb() - before < 50


def test_deeply_nested_document_is_refused() -> None:
    deep = b"<edXML>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</edXML>"
    with pytest.raises(UnsafeXmlError, match="deeper than 64"):
        parse_untrusted(deep)


def test_nesting_just_under_the_limit_is_accepted_and_over_it_refused() -> None:
    limits = XmlLimits(max_depth=10)
    assert parse_untrusted(b"<a>" * 10 + b"</a>" * 10, limits).getroot().tag == "a"
    with pytest.raises(UnsafeXmlError, match="deeper than 10"):
        parse_untrusted(b"<a>" * 11 + b"</a>" * 11, limits)


def test_oversized_body_is_refused_unread() -> None:
    with pytest.raises(UnsafeXmlError, match="exceeds the limit of 1000 bytes"):
        parse_untrusted(b"<edXML>" + b" " * 2000 + b"</edXML>", XmlLimits(max_bytes=1000))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param("<edXML>Hà Nội</edXML>".encode("utf-16"), "UTF-8", id="utf16-bom"),
        pytest.param(
            b'<?xml version="1.0" encoding="ISO-8859-1"?><edXML/>', "ISO-8859-1", id="latin1-declared"
        ),
        pytest.param(b"<edXML><unclosed></edXML>", "not well-formed XML at line 1", id="mismatched-tag"),
        pytest.param(b"   ", "empty body", id="blank"),
    ],
)
def test_malformed_or_wrongly_encoded_input_is_refused(payload: bytes, message: str) -> None:
    with pytest.raises(MalformedXmlError, match=message):
        parse_untrusted(payload)


def test_xinclude_is_not_processed() -> None:
    payload = (
        b'<edXML xmlns:xi="http://www.w3.org/2001/XInclude">'
        b'<xi:include href="file:///etc/passwd" parse="text"/></edXML>'
    )
    tree = parse_untrusted(payload)
    assert b"root:" not in etree.tostring(tree)
    assert tree.getroot()[0].tag == "{http://www.w3.org/2001/XInclude}include"


def test_vietnamese_text_survives_byte_for_byte_in_nfc_and_nfd() -> None:
    nfc = unicodedata.normalize("NFC", "Hòa Tiến").encode()
    nfd = unicodedata.normalize("NFD", "Hòa Tiến").encode()  # base letters + combining marks
    assert nfc != nfd
    tree = parse_untrusted(b"<edXML><a>" + nfc + b"</a><b>" + nfd + b"</b></edXML>")
    assert tree.getroot()[0].text.encode() == nfc
    assert tree.getroot()[1].text.encode() == nfd


def test_bom_and_utf8_declaration_are_accepted() -> None:
    tree = parse_untrusted(
        b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?><edXML xmlns="' + NS.encode() + b'"/>'
    )
    assert tree.getroot().tag == f"{{{NS}}}edXML"


def test_control_a_permissive_parser_really_expands_these_payloads() -> None:
    """Shows the payloads above are live: a parser with entity resolution expands them."""
    permissive = etree.XMLParser(resolve_entities=True, load_dtd=True)
    tree = etree.fromstring(b'<!DOCTYPE x [<!ENTITY a "expanded">]><x>&a;</x>', permissive)
    assert tree.text == "expanded"
