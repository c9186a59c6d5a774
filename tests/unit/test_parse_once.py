"""Each envelope is parsed and checked once (issue 12, item 3): the model read before verification is
what was signed (bus/intake_checks.py says why), so nothing is parsed or checked a second time."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from lxml import etree

import bus.intake
import bus.intake_checks
import bus.xmlparse
from bus.dsig import TrustStore, sign_tree
from bus.errors import SignatureError
from bus.organ_id import OrganId
from bus.settings import load_topology
from bus.topology import Topology
from bus.xmlparse import parse_untrusted
from tests.conftest import ROOT, Pki, q
from tests.unit.test_intake import FakePublisher, FakeStore, _intake

pytestmark = pytest.mark.asyncio
PROVINCE = OrganId.parse("000.00.00.H99")


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


def _counting(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _signed(data: bytes, pki: Pki) -> bytes:
    tree = parse_untrusted(data)
    sign_tree(tree, pki.rsa.key, pki.rsa.certificate)
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


async def test_a_signed_envelope_is_parsed_and_checked_once(
    monkeypatch: pytest.MonkeyPatch, topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    parses = _counting(monkeypatch, bus.intake, "parse_received")
    reparses = _counting(monkeypatch, bus.xmlparse, "parse_untrusted")
    checks = _counting(monkeypatch, bus.intake_checks, "check_tree")
    trust = TrustStore([pki.ca.certificate])
    intake = _intake(
        topology, pki, FakePublisher(), FakeStore(), trust=trust, signed_senders=frozenset({str(PROVINCE)})
    )
    await intake.accept(_signed(document_bytes, pki), sender=PROVINCE)
    assert (len(parses), len(reparses), len(checks)) == (1, 1, 1)


async def test_what_is_read_is_still_what_was_signed(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    """The content the reader sees and the digest covers are the same: a change anywhere it reads
    breaks the signature (the profile leaves nothing readable out)."""
    signed = _signed(document_bytes, pki)
    tree = parse_untrusted(signed)
    subject = tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader/Subject"))
    assert subject is not None
    subject.text = "V/v phê duyệt dự án khác"
    changed = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    intake = _intake(topology, pki, FakePublisher(), FakeStore(), trust=TrustStore([pki.ca.certificate]))
    with pytest.raises(SignatureError, match="DigestValue does not match"):
        await intake.accept(changed, sender=PROVINCE)
