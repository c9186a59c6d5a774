"""Hostile bytes never escape as anything but our InputError subclasses (the bus keeps serving).

A seeded, bounded mutation run over a signed envelope (a longer run found lazily parsed certificate
fields raising ValueError inside chain validation; fixed in bus/dsig/verify.py)."""

from __future__ import annotations

import base64
import random

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from bus.dsig import TrustStore, sign_tree, verify_tree
from bus.envelope import read_envelope
from bus.errors import InputError, SignatureError
from bus.xmlparse import parse_untrusted
from tests.conftest import TODAY, Pki

TOKENS = [
    b"<",
    b">",
    b"/",
    b"&amp;",
    b"<!--x-->",
    b"<?pi x?>",
    b"\x00",
    b"\xff",
    b"=",
    b'"',
    b" ",
    b"A",
    b"ds:",
    b"edXML:",
    b"\n",
    "ệ".encode(),
]


def _signed(document_bytes: bytes, pki: Pki) -> bytes:
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.rsa.key, pki.rsa.certificate)
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


def test_corrupt_certificate_field_is_a_signature_error(document_bytes: bytes, pki: Pki) -> None:
    signed = _signed(document_bytes, pki)
    der = pki.rsa.certificate.public_bytes(serialization.Encoding.DER)
    version_v3 = b"\xa0\x03\x02\x01\x02"
    assert version_v3 in der
    corrupt = der.replace(
        version_v3, b"\xa0\x03\x02\x01\x0a", 1
    )  # "version 11": parsed lazily by cryptography
    data = signed.replace(base64.b64encode(der), base64.b64encode(corrupt))
    assert data != signed
    with pytest.raises(SignatureError, match="X509Certificate cannot be read"):
        verify_tree(parse_untrusted(data), TrustStore([pki.ca.certificate]))


def test_mutated_envelopes_only_raise_input_errors(document_bytes: bytes, pki: Pki) -> None:
    signed = _signed(document_bytes, pki)
    trust = TrustStore([pki.ca.certificate])
    signature_at = signed.index(b"<ds:Signature")
    rnd = random.Random(20261123)
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(1500):
        data = bytearray(signed)
        for _ in range(rnd.randint(1, 4)):
            position = rnd.randrange(signature_at - 2000 if rnd.random() < 0.5 else 0, len(data))
            choice = rnd.random()
            if choice < 0.4:
                del data[position : position + rnd.randint(1, 8)]
            elif choice < 0.8:
                data[position:position] = rnd.choice(TOKENS)
            else:
                data[position] = rnd.randrange(256)
        for check in (
            lambda d: verify_tree(parse_untrusted(d), trust),
            lambda d: read_envelope(d, today=TODAY),
        ):
            try:
                check(bytes(data))
                outcomes["accepted"] += 1
            except InputError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 1000  # the mutations really break things...
    assert outcomes["accepted"] > 0  # ...and some (whitespace in text, say) are harmless
