"""Wiring of the AMQP agencies' consumers in a ``bus serve`` process (docs/amqp-agencies.md): the agency
intake, the acknowledgements, and the deliveries to their queues. Started by :mod:`entrypoints.runtime`
when the topology has an agency with ``transport = "amqp"``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aio_pika.abc import AbstractRobustConnection

from adapters.http.errors import api_error
from adapters.http.limits import MAX_REASON_CHARS
from adapters.rabbitmq import (
    AgencyAcks,
    AgencyDeliveries,
    AgencyIntake,
    BrokerNames,
    Refusal,
    Replies,
    agencies_by_user,
    open_channel,
)
from adapters.store import StatusStore
from bus.intake import Intake
from bus.settings import Settings
from bus.topology import AgencyTransport, Topology
from entrypoints.audit import notary
from entrypoints.bootstrap import new_publisher, node_identity

__all__ = ["AgencyLink", "http_inboxes", "refusal_of", "start_agency_link"]

ACKS_PREFETCH = 32


def refusal_of(exc: BaseException) -> Refusal | None:
    """The HTTP API's answer to *exc* (its one table, ``adapters.http.errors.ANSWERS``), for a reply."""
    error = api_error(exc)
    return None if error is None else Refusal(error.status, error.code, error.message, error.extra)


def http_inboxes(topology: Topology) -> Topology:
    """*topology* with its HTTP agencies only: the agencies whose inbox queues the inbox worker
    consumes (it reads nothing else of it). An AMQP agency's inbox queue is the agency deliveries'."""
    agencies = tuple(a for a in topology.agencies if a.transport is AgencyTransport.HTTP)
    return topology.model_copy(update={"agencies": agencies})


@dataclass
class AgencyLink:
    intake: AgencyIntake
    acks: AgencyAcks
    deliveries: AgencyDeliveries

    async def stop(self) -> None:
        """No new messages; what is in hand finishes, or goes back to its queue with the channel."""
        for consumer in (self.intake, self.acks, self.deliveries):
            with contextlib.suppress(Exception):
                await consumer.stop()


async def start_agency_link(
    settings: Settings,
    connection: AbstractRobustConnection,
    names: BrokerNames,
    intake: Intake,
    store: StatusStore,
) -> AgencyLink | None:
    """The AMQP agencies' consumers, consuming; None when no agency uses AMQP."""
    topology = settings.topology
    users = agencies_by_user(topology, names)
    if not users:
        return None
    replies = Replies(await open_channel(connection), timeout=settings.amqp.publish_timeout_s)
    deliveries_channel = await connection.channel()
    await deliveries_channel.set_qos(prefetch_count=settings.amqp.prefetch)
    deliveries = AgencyDeliveries(
        deliveries_channel, topology, names, store, await new_publisher(connection, settings)
    )
    intake_channel = await connection.channel()
    await intake_channel.set_qos(prefetch_count=settings.amqp.intake_prefetch)
    agency_intake = AgencyIntake(
        intake_channel,
        names,
        users,
        intake,
        store,
        replies,
        refusal_of,
        notary=notary(settings, node_identity(settings)),
    )
    acks_channel = await connection.channel()
    await acks_channel.set_qos(prefetch_count=ACKS_PREFETCH)
    acks = AgencyAcks(
        acks_channel, names, users, store, replies, refusal_of, max_reason_chars=MAX_REASON_CHARS
    )
    await deliveries.start()
    await agency_intake.start()
    await acks.start()
    return AgencyLink(agency_intake, acks, deliveries)
