"""Stored once, moved by reference (issue 12, item 1), on fakes: which copies the intake sends by
reference, what the reference looks like on the broker, and what the inbox worker and the relay do
with one. tests/integration/test_large_envelopes.py runs the same on the real services."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import IO, Any

import pytest

from adapters.national_axis import CircuitBreaker, RelayOut
from adapters.rabbitmq.headers import BODY_SHA256_HEADER, BODY_SIZE_HEADER, from_amqp, to_amqp
from adapters.rabbitmq.inbox import InboxWorker
from bus.delivery import InboxItem
from bus.errors import EnvelopeInvalidError, PoisonMessageError
from bus.headers import BodyRef, BusHeaders
from bus.intake import BodyPolicy, Intake, IntakePolicy, NodeIdentity
from bus.organ_id import OrganId
from bus.settings import load_topology
from bus.topology import Topology
from tests.amqp_fakes import BUS_ID, HEADERS, FakeChannel, FakeMessage, FakePublisher, Journal, settled
from tests.conftest import ROOT, Pki
from tests.factory import make_document
from tests.unit.test_consumers import COMMUNE, INBOX, NAMES, NOW, FakeInboxStore
from tests.unit.test_intake import FakePublisher as FakeIntakePublisher
from tests.unit.test_intake import FakeStore
from tests.unit.test_relay_out import DELAYS, OUTBOUND, FakeAxis, FakeEventStore

pytestmark = pytest.mark.asyncio
PROVINCE = OrganId.parse("000.00.00.H99")
SHA = "ab" * 32


class FakeBodies:
    def __init__(self) -> None:
        self.kept: dict[str, tuple[bytes, list[str]]] = {}

    async def put_body(self, ref: BodyRef, source: IO[bytes], *, bus_id: str) -> None:
        source.seek(0)
        data = source.read()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (ref.sha256, ref.size)
        self.kept.setdefault(ref.sha256, (data, []))[1].append(bus_id)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


def _intake(
    topology: Topology, pki: Pki, publisher: FakeIntakePublisher, bodies: FakeBodies | None
) -> Intake:
    node = NodeIdentity(OrganId.parse("000.00.90.H99"), pki.ec.key, pki.ec.certificate)
    return Intake(
        topology,
        node,
        publisher,
        FakeStore(),
        IntakePolicy(),
        clock=lambda: NOW,
        bodies=bodies,
        body_policy=BodyPolicy(inline_max_bytes=64 * 1024, inline_max_recipients=2),
    )


DISTRICTS = ["000.00.21.H99", "000.00.22.H99", "000.01.21.H99"]


@pytest.mark.parametrize(
    ("padding", "recipients", "by_reference"),
    [
        pytest.param(0, DISTRICTS[:2], False, id="small, few: inline"),
        pytest.param(200_000, DISTRICTS[:1], True, id="large: by reference"),
        pytest.param(0, DISTRICTS, True, id="many recipients: by reference"),
    ],
)
async def test_large_envelopes_and_wide_fan_outs_go_by_reference(
    topology: Topology, pki: Pki, padding: int, recipients: list[str], by_reference: bool
) -> None:
    publisher, bodies = FakeIntakePublisher(), FakeBodies()
    data = make_document(str(PROVINCE), recipients, 5, padding=padding)
    accepted = await _intake(topology, pki, publisher, bodies).accept(data, sender=PROVINCE)
    assert len(publisher.sent) == len(recipients)
    refs = {headers.body for _, _, _, headers in publisher.sent}
    if not by_reference:
        assert refs == {None}
        assert bodies.kept == {}
        assert all(body.startswith(b"<?xml") for _, body, _, _ in publisher.sent)
        return
    [ref] = refs
    assert ref is not None
    assert [body for _, body, _, _ in publisher.sent] == [b""] * len(recipients)  # a reference only
    stored, bus_ids = bodies.kept[ref.sha256]  # once, for every recipient
    assert bus_ids == [accepted.bus_id]
    assert b"TraceHeader" in stored
    assert b"<ds:Signature" in stored  # the sealed envelope: what each recipient gets


async def test_without_a_body_store_every_copy_carries_its_envelope(topology: Topology, pki: Pki) -> None:
    publisher = FakeIntakePublisher()
    data = make_document(str(PROVINCE), DISTRICTS, 5, padding=200_000)
    await _intake(topology, pki, publisher, None).accept(data, sender=PROVINCE)
    assert {headers.body for _, _, _, headers in publisher.sent} == {None}
    assert all(len(body) > 200_000 for _, body, _, _ in publisher.sent)


async def test_a_reference_travels_as_two_headers_and_back() -> None:
    document_id = "000.00.01.H99,2026/11/20,12/STC"
    headers = BusHeaders(BUS_ID, "000.00.01.H99", "000.01.21.H99", "document", document_id, BodyRef(SHA, 7))
    assert to_amqp(headers) == {**HEADERS, BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: 7}
    assert from_amqp(to_amqp(headers)) == headers
    assert from_amqp({**HEADERS, BODY_SHA256_HEADER: SHA.encode(), BODY_SIZE_HEADER: "7"}) == headers


@pytest.mark.parametrize(
    "ref",
    [
        {BODY_SHA256_HEADER: SHA},
        {BODY_SIZE_HEADER: 7},
        {BODY_SHA256_HEADER: "AB" * 32, BODY_SIZE_HEADER: 7},
        {BODY_SHA256_HEADER: SHA[:-1], BODY_SIZE_HEADER: 7},
        {BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: -1},
        {BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: "seven"},
        {BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: True},
    ],
)
async def test_a_malformed_reference_is_poison(ref: dict[str, Any]) -> None:
    with pytest.raises(PoisonMessageError, match="malformed x-bus-body"):
        from_amqp({**HEADERS, **ref})


class FakeBodyInbox(FakeInboxStore):
    def __init__(self, journal: Journal, present: set[str]) -> None:
        super().__init__(journal)
        self.present = present

    async def missing_bodies(self, shas: Sequence[str]) -> set[str]:
        self.journal.append(("missing?", *shas))
        return set(shas) - self.present

    async def store_inbox_many(self, items: Sequence[InboxItem]) -> list[bool]:
        return await super().store_inbox_many(items)


async def test_the_inbox_keeps_the_reference_and_dead_letters_a_dangling_one() -> None:
    journal: Journal = []
    store = FakeBodyInbox(journal, {SHA})
    worker = InboxWorker(
        FakeChannel(),  # type: ignore[arg-type]
        load_topology(ROOT / "config" / "example-province.toml"),
        NAMES,
        store,
        FakePublisher(journal),
        store_retry_s=0.01,
        clock=lambda: NOW,
    )
    channel = worker._channel
    await worker.start()
    ref = {BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: 9}
    kept = FakeMessage(journal, body=b"", headers={**HEADERS, **ref})
    await channel.queues[INBOX].deliver(kept)  # type: ignore[attr-defined]
    await settled(kept)
    [item] = store.items
    assert (item.agency, item.body, item.body_sha256) == (str(COMMUNE), None, SHA)
    gone = {BODY_SHA256_HEADER: "cd" * 32, BODY_SIZE_HEADER: 9}
    dangling = FakeMessage(journal, body=b"", message_id=f"{BUS_ID}|x", headers={**HEADERS, **gone})
    await channel.queues[INBOX].deliver(dangling)  # type: ignore[attr-defined]
    await settled(dangling)
    await worker.stop()
    dead = [entry for entry in journal if entry[0] == "dead_letter"]
    assert len(dead) == 1
    assert "is not in the body store" in str(dead[0])
    assert journal[-1] == ("ack", dangling.message_id)  # after its dead-letter copy
    assert len(store.items) == 1


class FakeBodyEvents(FakeEventStore):
    def __init__(self, journal: Journal, bodies: dict[str, bytes]) -> None:
        super().__init__(journal)
        self.bodies = bodies

    async def read_body(self, sha256: str) -> bytes | None:
        self.journal.append(("read_body", sha256))
        return self.bodies.get(sha256)


class RecordingAxis(FakeAxis):
    async def send_edoc(self, body: bytes, *, sender: str, to: list[str], message_type: str) -> str:
        self.journal.append(("body", body))
        return await super().send_edoc(body, sender=sender, to=to, message_type=message_type)


async def test_the_relay_sends_the_envelope_read_from_the_body_store() -> None:
    journal: Journal = []
    scanned = "<edXML>hồ sơ quét</edXML>".encode()
    store = FakeBodyEvents(journal, {SHA: scanned})
    relay = RelayOut(
        FakeChannel(),  # type: ignore[arg-type]
        NAMES,
        store,
        FakePublisher(journal),
        RecordingAxis(journal, "axis-7"),  # type: ignore[arg-type]
        CircuitBreaker(threshold=100),
        retry_delays_ms=DELAYS,
        store_retry_s=0.01,
    )
    await relay.start()
    ref = {BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: 9}
    message = FakeMessage(journal, body=b"", headers={**HEADERS, **ref})
    await relay._channel.queues[OUTBOUND].deliver(message)  # type: ignore[attr-defined]
    gone = {BODY_SHA256_HEADER: "cd" * 32, BODY_SIZE_HEADER: 9}
    missing = FakeMessage(journal, body=b"", message_id=f"{BUS_ID}|y", headers={**HEADERS, **gone})
    await relay._channel.queues[OUTBOUND].deliver(missing)  # type: ignore[attr-defined]
    await relay.stop()
    assert ("body", scanned) in journal
    [kept] = store.sends
    assert kept.body == b""  # the reference is kept, not a second copy
    assert kept.headers[BODY_SHA256_HEADER] == SHA
    assert any(entry[0] == "dead_letter" and "not in the body store" in str(entry) for entry in journal)
    assert relay.attempts == 1  # the dangling one never reached the axis


async def test_the_fan_out_byte_cap_counts_only_copies_that_carry_the_envelope(
    topology: Topology, pki: Pki
) -> None:
    """100 MB to 50 communes is 50 references in RabbitMQ, not 5 GB: only inline copies count."""
    home = OrganId.parse("000.00.01.H99")
    big = make_document(str(home), DISTRICTS, 95, padding=200_000)
    node = NodeIdentity(OrganId.parse("000.00.90.H99"), pki.ec.key, pki.ec.certificate)
    tight = IntakePolicy(max_fanout_bytes=300_000)  # under 3 copies of the envelope
    policy = BodyPolicy(inline_max_bytes=64 * 1024, inline_max_recipients=2)
    by_reference = Intake(
        topology,
        node,
        FakeIntakePublisher(),
        FakeStore(),
        tight,
        clock=lambda: NOW,
        bodies=FakeBodies(),
        body_policy=policy,
    )
    accepted = await by_reference.accept(big, sender=home)
    assert len(accepted.destinations) == 3
    inline = Intake(topology, node, FakeIntakePublisher(), FakeStore(), tight, clock=lambda: NOW)
    with pytest.raises(EnvelopeInvalidError, match=r"intake\.max_fanout_bytes"):  # full copies: refused
        await inline.accept(big, sender=home)
