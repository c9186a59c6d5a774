"""What the AMQP agencies' consumers share: who sent a message (the broker-validated ``user_id``), the
answer to it (the HTTP API's status, code and message, as JSON), and the reply that carries the answer
back to the agency's direct reply-to (docs/amqp-agencies.md).

**Identity.** RabbitMQ refuses a message whose ``user_id`` property is not the connection's user (the
channel is closed with PRECONDITION_FAILED), so a ``user_id`` that reaches a consumer is the
publisher's; a message without one is refused here, with ``unauthenticated``. Only the users of AMQP
agencies (:meth:`BrokerNames.agency_user`) are senders; any other is ``unknown-agency``.

**Replies** go to ``reply_to`` with the message's ``correlation_id``, through the default exchange, and
only when ``reply_to`` is a direct reply-to address (``amq.rabbitmq.reply-to.…``, which the broker
writes for the publishing channel): the bus's own user may write to any queue, so an agency naming
another queue there would have the bus deliver into it. A reply is the answer, not the durable step:
one whose channel is gone is dropped by the broker (not ``mandatory``: RabbitMQ 3.10 returns every
mandatory direct reply-to message as unroutable, delivered or not), and the agency, having had no
answer, sends again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError

from adapters.rabbitmq.names import BrokerNames
from bus.topology import Agency, AgencyTransport, Topology

__all__ = [
    "DIRECT_REPLY_TO",
    "INTERNAL",
    "UNAUTHENTICATED",
    "Refusal",
    "RefusalOf",
    "Replies",
    "ReplyPort",
    "agencies_by_user",
    "answer_then_ack",
    "sender_of",
]

log = structlog.get_logger("bus.agency")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to."


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the bus answers for a message it refuses: the HTTP API's *status*, *code* and *message* for
    the same error (docs/http-api.md, "Errors"), with its further fields."""

    status: int
    code: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def answer(self) -> dict[str, Any]:
        return {"status": self.status, "error": {"code": self.code, "message": self.message, **self.extra}}


# The HTTP API's answer to an error, by its table (adapters/http/errors.py ``api_error``), or None for an
# error the table does not know. The entry point passes it in: an adapter does not reach into another.
RefusalOf = Callable[[BaseException], Refusal | None]

UNAUTHENTICATED = Refusal(
    401,
    "unauthenticated",
    "the message has no user_id property: set it to your RabbitMQ user name (the broker checks it)",
)
# As the HTTP API's 500 (adapters/http/errors.py, ``guarded``).
INTERNAL = Refusal(500, "internal", "internal error; the request had no effect unless a 202 was sent")


def agencies_by_user(topology: Topology, names: BrokerNames) -> dict[str, Agency]:
    """The AMQP agencies by their RabbitMQ user name."""
    return {
        names.agency_user(agency.organ_id): agency
        for agency in topology.agencies
        if agency.transport is AgencyTransport.AMQP
    }


def sender_of(user_id: str | None, users: Mapping[str, Agency]) -> Agency | Refusal:
    """The agency that published a message whose (broker-validated) ``user_id`` is *user_id*."""
    if not user_id:
        return UNAUTHENTICATED
    agency = users.get(user_id)
    if agency is None:
        return Refusal(
            401, "unknown-agency", f"{user_id[:64]!r} is not the RabbitMQ user of an AMQP agency of this axis"
        )
    return agency


class ReplyPort(Protocol):
    async def reply(self, to: str | None, correlation_id: str | None, answer: Mapping[str, Any]) -> bool:
        """Send *answer* to *to*; whether it was sent."""


class Replies:
    """Replies on a confirming channel of their own (:func:`~adapters.rabbitmq.publisher.open_channel`)."""

    def __init__(self, channel: AbstractChannel, *, timeout: float = 30.0) -> None:
        self._channel = channel
        self._timeout = timeout

    async def reply(self, to: str | None, correlation_id: str | None, answer: Mapping[str, Any]) -> bool:
        if not to:
            log.info("agency.no_reply_to", correlation_id=correlation_id, status=answer.get("status"))
            return False
        if not to.startswith(DIRECT_REPLY_TO) or len(to) > 255:
            log.warning("agency.reply_to_refused", reply_to=to[:80], status=answer.get("status"))
            return False
        message = aio_pika.Message(
            json.dumps(answer, ensure_ascii=False).encode("utf-8"),
            correlation_id=correlation_id,
            content_type="application/json",
        )
        try:
            await self._channel.default_exchange.publish(
                message, routing_key=to, mandatory=False, timeout=self._timeout
            )
        except (DeliveryError, AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError) as exc:
            # The broker is gone, or the channel: the agency has no answer and sends again.
            log.warning("agency.reply_lost", correlation_id=correlation_id, error=type(exc).__name__)
            return False
        return True


async def answer_then_ack(
    replies: ReplyPort,
    message: AbstractIncomingMessage,
    answer: Mapping[str, Any],
    ack: Callable[..., Awaitable[None]],
) -> None:
    """Reply, then acknowledge *message* (every durable step is done by then); a message delivered
    **again** is acknowledged first. Its first reply may be what failed: RabbitMQ 3.10 closes the whole
    connection (541 INTERNAL_ERROR) on a reply to a direct reply-to address of a node that died, which
    took the acknowledgement with it, so the same message came back, and the same reply closed the
    connection again, forever (seen in the cluster test). Acknowledged first, it cannot come back; the
    agency that had no answer sends the envelope again and is told it was accepted (docs/amqp-agencies.md)."""
    correlation_id = message.correlation_id or ""
    if message.redelivered:
        await ack(message, correlation_id=correlation_id)
        await replies.reply(message.reply_to, message.correlation_id, answer)
        return
    await replies.reply(message.reply_to, message.correlation_id, answer)
    await ack(message, correlation_id=correlation_id)
