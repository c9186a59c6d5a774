"""The intake pipeline's decisions, on in-memory fakes of the broker and the store (core unit tests;
tests/integration/test_intake_live.py runs the same path on the real RabbitMQ and database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pytest
from lxml import etree

from bus.delivery import AcceptedDocument
from bus.dsig import TrustStore, sign_tree, verify_tree
from bus.errors import (
    BrokerError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    SignatureMissingError,
)
from bus.intake import Intake, IntakePolicy, NodeIdentity
from bus.organ_id import OrganId
from bus.routing import DestinationKind
from bus.topology import Topology, load_topology
from bus.xmlparse import parse_untrusted
from tests.conftest import ROOT, Pki, q

PROVINCE = OrganId.parse("000.00.00.H99")
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.asyncio


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, str, dict[str, str | int | bool]]] = []
        self.fail = fail

    async def deliver(
        self, routing_key: str, body: bytes, *, message_id: str, headers: Mapping[str, str | int | bool] = {}
    ) -> None:
        if self.fail:
            raise BrokerError("broker did not confirm")
        self.sent.append((routing_key, body, message_id, dict(headers)))


class FakeStore:
    def __init__(self) -> None:
        self.accepted: dict[str, tuple[AcceptedDocument, list[tuple[str, str]]]] = {}

    async def find_duplicate(self, document: AcceptedDocument) -> str | None:
        return next(
            (bus_id for bus_id, (d, _) in self.accepted.items() if d.dedupe_key == document.dedupe_key), None
        )

    async def record_accepted(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]]
    ) -> bool:
        self.accepted[document.bus_id] = (document, list(recipients))
        return True


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


def _intake(
    topology: Topology, pki: Pki, publisher: FakePublisher, store: FakeStore, **policy: object
) -> Intake:
    node = NodeIdentity(OrganId.parse("000.00.90.H99"), pki.ec.key, pki.ec.certificate)
    return Intake(topology, node, publisher, store, IntakePolicy(**policy), clock=lambda: NOW)  # type: ignore[arg-type]


async def test_document_is_traced_signed_and_delivered_to_each_recipient(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    accepted = await _intake(topology, pki, publisher, store).accept(document_bytes, sender=PROVINCE)
    assert [d.routing_key for d in accepted.destinations] == ["org.H99.21.00.000", "org.H99.21.01.000"]
    assert [m[2] for m in publisher.sent] == [
        f"{accepted.bus_id}|000.00.21.H99",
        f"{accepted.bus_id}|000.01.21.H99",
    ]
    out = parse_untrusted(publisher.sent[0][1])
    [hop] = out.findall(q("edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader"))
    assert hop.findtext(q("OrganId")) == "000.00.90.H99"
    assert hop.findtext(q("Timestamp")) == "2026/11/23 09:00:00"
    [bus_signature] = verify_tree(out, TrustStore([pki.ca.certificate]))
    assert bus_signature.signer == pki.ec.certificate
    record, recipients = store.accepted[accepted.bus_id]
    assert recipients == [("000.00.21.H99", "local"), ("000.01.21.H99", "local")]
    assert record.code == "1234/UBND-KGVX"


async def test_forged_sender_is_refused_and_nothing_moves(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    with pytest.raises(ForgedSenderError, match=r"authenticated as 000\.00\.02\.H99"):
        await _intake(topology, pki, publisher, store).accept(
            document_bytes, sender=OrganId.parse("000.00.02.H99")
        )
    assert publisher.sent == []
    assert store.accepted == {}


async def test_invalid_envelope_is_refused_and_nothing_moves(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    with pytest.raises(EnvelopeInvalidError):
        await _intake(topology, pki, publisher, store).accept(
            document_bytes.replace(b"Subject>", b"Subjct>"), sender=PROVINCE
        )
    assert publisher.sent == []


async def test_duplicate_gets_the_first_bus_id(topology: Topology, pki: Pki, document_bytes: bytes) -> None:
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(topology, pki, publisher, store)
    first = await intake.accept(document_bytes, sender=PROVINCE)
    with pytest.raises(DuplicateEnvelopeError) as caught:
        await intake.accept(document_bytes, sender=PROVINCE)
    assert caught.value.bus_id == first.bus_id
    assert len(publisher.sent) == 2  # the second attempt published nothing


async def test_retry_after_a_broker_failure_reuses_the_bus_id(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    failing, store = FakePublisher(fail=True), FakeStore()
    with pytest.raises(BrokerError):
        await _intake(topology, pki, failing, store).accept(document_bytes, sender=PROVINCE)
    assert store.accepted == {}  # not accepted: the client must retry
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, store).accept(document_bytes, sender=PROVINCE)
    again = await _intake(topology, pki, FakePublisher(), FakeStore()).accept(document_bytes, sender=PROVINCE)
    assert accepted.bus_id == again.bus_id  # derived from (sender, DocumentId, business type)


async def test_status_goes_back_to_the_documents_sender(
    topology: Topology, pki: Pki, status_bytes: bytes
) -> None:
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, FakeStore()).accept(
        status_bytes, sender=OrganId.parse("000.00.21.H99")
    )
    [destination] = accepted.destinations
    assert str(destination.addressed_to) == "000.00.00.H99"
    assert publisher.sent[0][0] == "org.H99.00.00.000"


async def test_recipient_outside_the_province_goes_outbound(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    data = document_bytes.replace(b"<edXML:OrganId>000.01.21.H99<", b"<edXML:OrganId>000.00.00.G22<")
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, FakeStore()).accept(data, sender=PROVINCE)
    assert [d.kind for d in accepted.destinations] == [DestinationKind.LOCAL, DestinationKind.OUTBOUND]
    assert publisher.sent[1][0] == "outbound"


async def test_signature_required_by_policy(topology: Topology, pki: Pki, document_bytes: bytes) -> None:
    trust = TrustStore([pki.ca.certificate])
    publisher = FakePublisher()
    intake = _intake(
        topology, pki, publisher, FakeStore(), trust=trust, signed_senders=frozenset({str(PROVINCE)})
    )
    with pytest.raises(SignatureMissingError):
        await intake.accept(document_bytes, sender=PROVINCE)
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.rsa.key, pki.rsa.certificate)
    signed = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    await intake.accept(signed, sender=PROVINCE)
    # The sender's signature and the bus's both verify on what the recipient receives.
    results = verify_tree(parse_untrusted(publisher.sent[0][1]), trust)
    assert [r.signer for r in results] == [pki.rsa.certificate, pki.ec.certificate]
