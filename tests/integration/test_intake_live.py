"""Intake end to end on the real broker and store: accepted means in the inbox and on the timeline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel

from adapters.rabbitmq import BrokerNames, Publisher
from adapters.store import StatusStore
from bus.delivery import DeliveryState
from bus.dsig import TrustStore, verify_tree
from bus.errors import DuplicateEnvelopeError
from bus.intake import Intake, NodeIdentity
from bus.organ_id import OrganId
from bus.topology import Topology
from bus.xmlparse import parse_untrusted
from tests.conftest import Pki

pytestmark = pytest.mark.asyncio


async def test_accepted_envelope_is_in_each_inbox_and_on_the_timeline(
    channel: AbstractChannel,
    names: BrokerNames,
    topology: Topology,
    pki: Pki,
    document_bytes: bytes,
    tmp_path: Path,
) -> None:
    store = StatusStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    await store.create_schema()
    node = NodeIdentity(OrganId.parse("000.00.90.H99"), pki.ec.key, pki.ec.certificate)
    intake = Intake(
        topology,
        node,
        Publisher(channel, names),
        store,
        clock=lambda: dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC),
    )
    accepted = await intake.accept(document_bytes, sender=OrganId.parse("000.00.00.H99"))

    for recipient in ("000.00.21.H99", "000.01.21.H99"):
        queue = await channel.get_queue(names.inbox(OrganId.parse(recipient)), ensure=False)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.message_id == f"{accepted.bus_id}|{recipient}"
        assert message.headers["x-bus-recipient"] == recipient
        assert len(verify_tree(parse_untrusted(message.body), TrustStore([pki.ca.certificate]))) == 1
    other = await channel.get_queue(names.inbox(OrganId.parse("000.02.21.H99")), ensure=False)
    assert await other.get(fail=False, timeout=5) is None

    timeline = await store.timeline(accepted.bus_id)
    assert {(e.recipient, e.state) for e in timeline} == {
        ("000.00.21.H99", DeliveryState.ACCEPTED),
        ("000.01.21.H99", DeliveryState.ACCEPTED),
    }
    with pytest.raises(DuplicateEnvelopeError):
        await intake.accept(document_bytes, sender=OrganId.parse("000.00.00.H99"))
    await store.close()
