"""Idempotent declaration of the axis on the broker, run at every start-up.

* ``<prefix>.deliver``: a durable direct exchange; each agency inbox binds the keys of
  :func:`bus.routing.binding_keys`, and the outbound queue binds ``outbound``.
* Inboxes, the outbound queue and the dead-letter queue are **quorum** queues (replicated, durable),
  dead-lettering at-least-once into ``<prefix>.dlx``, so a message the broker drops (delivery limit,
  rejection) still lands in ``<prefix>.deadletter``.
* Retry queues, one per work queue and delay: messages wait out their TTL there and are
  dead-lettered back to the work queue. Back-off lives in the broker, not in a sleeping task.
* With AMQP agencies in the topology (:func:`declare_agency_topology`): the agency intake and the
  agency acknowledgements, each a fanout exchange with a quorum queue of the same name, and one
  quorum delivery queue per AMQP agency (docs/amqp-agencies.md). Their inbox queues stay as they are:
  the bus moves what arrives there to the delivery queue.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from adapters.rabbitmq.names import RETRY_DELAYS_MS, BrokerNames
from bus.routing import binding_keys
from bus.topology import AgencyTransport, Topology

__all__ = ["declare_agency_topology", "declare_topology"]


def _quorum(names: BrokerNames) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dead_letter_exchange,
        # at-least-once dead-lettering needs reject-publish overflow (RabbitMQ 3.10+).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def _retry_queues(
    channel: AbstractChannel, target: str, names: BrokerNames, delays: tuple[int, ...]
) -> None:
    for delay in delays:
        await channel.declare_queue(
            names.retry_queue(target, delay),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": target,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )


async def declare_topology(
    channel: AbstractChannel,
    topology: Topology,
    names: BrokerNames,
    *,
    retry_delays: tuple[int, ...] = RETRY_DELAYS_MS,
) -> None:
    """Declare every exchange, queue and binding of *topology*; safe to run again and from many processes."""
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        names.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx)
    deliver = await channel.declare_exchange(
        names.deliver_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    outbound = await channel.declare_queue(names.outbound_queue, durable=True, arguments=_quorum(names))
    await outbound.bind(deliver, routing_key="outbound")
    await _retry_queues(channel, names.outbound_queue, names, retry_delays)
    await channel.declare_queue(names.axis_inbound_queue, durable=True, arguments=_quorum(names))
    for agency in topology.agencies:
        inbox = await channel.declare_queue(
            names.inbox(agency.organ_id), durable=True, arguments=_quorum(names)
        )
        for key in binding_keys(agency):
            await inbox.bind(deliver, routing_key=key)
    await declare_agency_topology(channel, topology, names)


async def declare_agency_topology(channel: AbstractChannel, topology: Topology, names: BrokerNames) -> None:
    """The AMQP agencies' exchanges and queues; nothing when no agency uses AMQP (so a province
    without them has no object its users could be given rights on)."""
    agencies = [a for a in topology.agencies if a.transport is AgencyTransport.AMQP]
    if not agencies:
        return
    for name in (names.agency_intake, names.agency_acks):
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(name, durable=True, arguments=_quorum(names))
        await queue.bind(exchange)
    for agency in agencies:
        await channel.declare_queue(
            names.agency_queue(agency.organ_id), durable=True, arguments=_quorum(names)
        )
