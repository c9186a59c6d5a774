"""The axis on the real broker: idempotent declaration, hierarchy routing, confirms, retry, dead letters."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from adapters.rabbitmq import BrokerNames, Publisher, declare_topology
from adapters.rabbitmq.headers import ATTEMPT_HEADER, REASON_HEADER, SOURCE_HEADER
from bus.errors import UnroutableError
from bus.headers import BusHeaders
from bus.organ_id import OrganId
from bus.routing import agency_key, group_key
from bus.topology import AgencyLevel, Topology
from tests.integration.conftest import TEST_RETRY_DELAYS

pytestmark = pytest.mark.asyncio


async def _drain(
    channel: AbstractChannel, queue_name: str, *, wait: float = 0.0
) -> list[aio_pika.IncomingMessage]:
    """Every message now in *queue_name* (acknowledged), after waiting *wait* seconds for late ones."""
    queue = await channel.get_queue(queue_name, ensure=False)
    await asyncio.sleep(wait)
    got: list[aio_pika.IncomingMessage] = []
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        await message.ack()
        got.append(message)
    return got


async def _counts(channel: AbstractChannel, names: BrokerNames, topology: Topology) -> dict[str, int]:
    counts = {}
    for agency in topology.agencies:
        queue = await channel.declare_queue(names.inbox(agency.organ_id), passive=True)
        counts[str(agency.organ_id)] = queue.declaration_result.message_count or 0
    return counts


async def test_declaration_is_idempotent_and_queues_are_quorum(
    connection: AbstractRobustConnection, names: BrokerNames, topology: Topology
) -> None:
    channel = await connection.channel()
    await declare_topology(channel, topology, names, retry_delays=TEST_RETRY_DELAYS)  # second time: no error
    await declare_topology(channel, topology, names, retry_delays=TEST_RETRY_DELAYS)
    # Redeclaring an inbox as a classic queue must clash: it proves the inbox is a quorum queue.
    inbox = names.inbox(OrganId.parse("000.00.21.H99"))
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(inbox, durable=True, arguments={"x-queue-type": "classic"})


async def test_one_publish_reaches_one_agency_a_district_or_the_province(
    channel: AbstractChannel, names: BrokerNames, topology: Topology
) -> None:
    publisher = Publisher(channel, names)
    commune = OrganId.parse("000.01.21.H99")
    district = OrganId.parse("000.00.21.H99")
    await publisher.deliver(agency_key(commune), b"<one/>", message_id="m1")
    await publisher.deliver(group_key(district, AgencyLevel.COMMUNE), b"<communes/>", message_id="m2")
    await publisher.deliver(group_key(OrganId.parse("000.00.00.H99")), b"<all/>", message_id="m3")
    counts = await _counts(channel, names, topology)
    assert counts["000.01.21.H99"] == 3  # its own, its district's communes, everyone
    assert counts["000.02.21.H99"] == 2
    assert counts["000.00.21.H99"] == 1  # the district itself is not a commune
    assert counts["000.01.22.H99"] == 1  # another district's commune: only the province-wide one
    assert counts["000.31.00.H99"] == 1
    messages = await _drain(channel, names.inbox(commune))
    assert [m.body for m in messages] == [b"<one/>", b"<communes/>", b"<all/>"]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in messages)


async def test_outbound_keeps_what_leaves_the_province(channel: AbstractChannel, names: BrokerNames) -> None:
    headers = BusHeaders(
        "b-1", "000.00.01.H99", "000.00.00.G22", "document", "000.00.01.H99,2026/11/20,7/STC"
    )
    await Publisher(channel, names).deliver(
        "outbound", "<gửi bộ/>".encode(), message_id="out-1", headers=headers
    )
    [message] = await _drain(channel, names.outbound_queue)
    assert message.body.decode() == "<gửi bộ/>"
    assert (
        message.headers.items()
        >= {
            "x-bus-id": "b-1",
            "x-bus-sender": "000.00.01.H99",
            "x-bus-recipient": "000.00.00.G22",
            "x-bus-kind": "document",
            "x-bus-document-id": "000.00.01.H99,2026/11/20,7/STC",
        }.items()
    )  # and the broker's x-delivery-count


async def test_unroutable_publish_is_an_error_not_a_silent_drop(
    channel: AbstractChannel, names: BrokerNames
) -> None:
    with pytest.raises(UnroutableError, match=r"org\.H99\.99\.99\.999"):
        await Publisher(channel, names).deliver("org.H99.99.99.999", b"<x/>", message_id="lost?")


async def test_retry_comes_back_after_its_delay(channel: AbstractChannel, names: BrokerNames) -> None:
    publisher = Publisher(channel, names)
    await publisher.retry(names.outbound_queue, TEST_RETRY_DELAYS[0], b"<again/>", message_id="r1", attempt=2)
    assert await _drain(channel, names.outbound_queue) == []  # still waiting out its delay
    back = await _drain(channel, names.outbound_queue, wait=TEST_RETRY_DELAYS[0] / 1000 + 1.5)
    assert [m.body for m in back] == [b"<again/>"]
    assert back[0].headers[ATTEMPT_HEADER] == 2
    assert back[0].message_id == "r1"


async def test_dead_letter_keeps_the_reason(channel: AbstractChannel, names: BrokerNames) -> None:
    reason = "Chữ ký không hợp lệ: DigestValue does not match"
    await Publisher(channel, names).dead_letter(
        b"<bad/>", message_id="d1", reason=reason, source_queue=names.outbound_queue
    )
    [message] = await _drain(channel, names.dead_letter_queue)
    assert message.headers[REASON_HEADER] == reason
    assert message.headers[SOURCE_HEADER] == names.outbound_queue


async def test_rejected_message_is_dead_lettered_by_the_broker(
    channel: AbstractChannel, names: BrokerNames
) -> None:
    """Even a message a consumer rejects without our help lands in the dead-letter queue."""
    await Publisher(channel, names).deliver("outbound", b"<rejected/>", message_id="x1")
    queue = await channel.get_queue(names.outbound_queue, ensure=False)
    message = await queue.get(timeout=5)
    assert message is not None
    await message.reject(requeue=False)
    [dead] = await _drain(channel, names.dead_letter_queue, wait=0.5)
    assert dead.body == b"<rejected/>"
