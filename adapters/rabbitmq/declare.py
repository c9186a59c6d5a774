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
* Every quorum queue is declared with ``x-quorum-initial-group-size`` = ``[amqp] quorum_replicas``
  (three by default: a queue on three nodes survives the loss of one). A queue declared before that
  setting existed keeps its arguments and members: RabbitMQ refuses a declaration that changes them,
  so it is declared again as it was, and an operator grows it (``rabbitmq-queues grow``,
  docs/deployment.md). Nothing is ever deleted or re-created here.
"""

from __future__ import annotations

from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

from adapters.rabbitmq.names import RETRY_DELAYS_MS, BrokerNames
from bus.routing import binding_keys
from bus.topology import AgencyTransport, Topology

__all__ = ["declare_agency_topology", "declare_topology"]

log = structlog.get_logger("bus.broker")

GROUP_SIZE = "x-quorum-initial-group-size"


async def _queue(
    channel: AbstractChannel, name: str, arguments: dict[str, Any], replicas: int | None
) -> AbstractQueue:
    """A durable queue; a quorum queue with *replicas* members, unless it exists with other arguments."""
    if replicas is None or arguments.get("x-queue-type") != "quorum":
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    try:
        return await channel.declare_queue(name, durable=True, arguments={**arguments, GROUP_SIZE: replicas})
    except ChannelPreconditionFailed as exc:
        if GROUP_SIZE not in str(exc):
            raise
        # Declared before [amqp] quorum_replicas: kept as it is (the broker closed the channel; a robust
        # channel reopens, a plain one is reopened here).
        log.info("broker.queue_kept", queue=name, reason="declared before quorum_replicas; grow it by hand")
        await channel.reopen()
        return await channel.declare_queue(name, durable=True, arguments=arguments)


def _quorum(names: BrokerNames) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dead_letter_exchange,
        # at-least-once dead-lettering needs reject-publish overflow (RabbitMQ 3.10+).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def _retry_queues(
    channel: AbstractChannel, target: str, names: BrokerNames, delays: tuple[int, ...], replicas: int | None
) -> None:
    for delay in delays:
        await _queue(
            channel,
            names.retry_queue(target, delay),
            {
                "x-queue-type": "quorum",
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": target,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
            replicas,
        )


async def declare_topology(
    channel: AbstractChannel,
    topology: Topology,
    names: BrokerNames,
    *,
    retry_delays: tuple[int, ...] = RETRY_DELAYS_MS,
    replicas: int | None = None,
) -> None:
    """Declare every exchange, queue and binding of *topology*; safe to run again and from many processes.
    *replicas*: members of each quorum queue (None: the broker's default, every node)."""
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await _queue(channel, names.dead_letter_queue, {"x-queue-type": "quorum"}, replicas)
    await dead.bind(dlx)
    deliver = await channel.declare_exchange(
        names.deliver_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    outbound = await _queue(channel, names.outbound_queue, _quorum(names), replicas)
    await outbound.bind(deliver, routing_key="outbound")
    await _retry_queues(channel, names.outbound_queue, names, retry_delays, replicas)
    await _queue(channel, names.axis_inbound_queue, _quorum(names), replicas)
    for agency in topology.agencies:
        inbox = await _queue(channel, names.inbox(agency.organ_id), _quorum(names), replicas)
        for key in binding_keys(agency):
            await inbox.bind(deliver, routing_key=key)
    await declare_agency_topology(channel, topology, names, replicas=replicas)


async def declare_agency_topology(
    channel: AbstractChannel, topology: Topology, names: BrokerNames, *, replicas: int | None = None
) -> None:
    """The AMQP agencies' exchanges and queues; nothing when no agency uses AMQP (so a province
    without them has no object its users could be given rights on)."""
    agencies = [a for a in topology.agencies if a.transport is AgencyTransport.AMQP]
    if not agencies:
        return
    for name in (names.agency_intake, names.agency_acks):
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await _queue(channel, name, _quorum(names), replicas)
        await queue.bind(exchange)
    for agency in agencies:
        await _queue(channel, names.agency_queue(agency.organ_id), _quorum(names), replicas)
