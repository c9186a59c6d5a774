"""Publishing with publisher confirms and ``mandatory``: a publish returns only once the broker has
taken responsibility for the message; an unroutable or refused message raises, never vanishes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelClosed,
    ChannelInvalidStateError,
    ConnectionClosed,
    DeliveryError,
    PublishError,
)

from adapters.rabbitmq.headers import (
    ATTEMPT_HEADER,
    DEAD_ID_HEADER,
    NOT_RESTORED,
    REASON_HEADER,
    REPLAY_HEADER,
    SOURCE_HEADER,
    HeaderValue,
    to_amqp,
)
from adapters.rabbitmq.names import BrokerNames
from bus.delivery import DeadLetter
from bus.errors import BrokerError, UnroutableError
from bus.headers import BusHeaders

__all__ = ["Publisher", "open_channel"]

log = structlog.get_logger("bus.broker")

# What a lost connection or channel raises under a publish: published again once the channel is back.
# ChannelClosed: the channel went under the publish (the broker closed it, or the publisher reopened it
# after a nack); a robust channel is reopened, and the publish goes again on it.
_LOST = (ChannelInvalidStateError, ChannelClosed, ConnectionClosed, AMQPConnectionError, ConnectionError)


async def open_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel whose publishes wait for the broker's confirm and raise when a message is returned."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


class Publisher:
    """Durable publishes onto the axis. Every method returns after the broker's confirm, or raises
    :class:`~bus.errors.BrokerError` (:class:`~bus.errors.UnroutableError` for a returned message)."""

    def __init__(self, channel: AbstractChannel, names: BrokerNames, *, timeout: float = 30.0) -> None:
        self._channel = channel
        self._timeout = timeout
        self._names = names
        self._deliver: AbstractExchange | None = None
        self._generation = 0  # channel reopenings (after a nack), so that concurrent nacks reopen it once
        self._reopening = asyncio.Lock()

    async def _exchange(self) -> AbstractExchange:
        if self._deliver is None:
            self._deliver = await self._channel.get_exchange(self._names.deliver_exchange, ensure=False)
        return self._deliver

    async def _publish(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, HeaderValue],
        expiration_ms: int | None = None,
    ) -> None:
        message = aio_pika.Message(
            body,
            message_id=message_id,
            # Per-message TTL, below the retry queue's own: the jitter of a back-off tier.
            expiration=None if expiration_ms is None else expiration_ms / 1000,
            content_type="application/xml",
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers),
        )
        deadline = asyncio.get_running_loop().time() + self._timeout
        pause = 0.2
        nacked = False
        while True:
            left = deadline - asyncio.get_running_loop().time()
            generation = self._generation
            try:
                await exchange.publish(
                    message, routing_key=routing_key, mandatory=True, timeout=max(left, 0.1)
                )
                return
            except PublishError as exc:  # Basic.Return: mandatory and nothing bound
                raise UnroutableError(
                    f"no queue is bound for routing key {routing_key!r}: message {message_id} "
                    "was returned by the broker, not delivered"
                ) from exc
            except _LOST as exc:
                # The connection or the channel went (a node of the cluster died, say) before the confirm
                # came: the message may or may not be stored. Publish it again once the channel is back
                # (on another node: adapters/rabbitmq/cluster.py), within the publish timeout; a
                # duplicate is absorbed by the consumers (same message id).
                left = deadline - asyncio.get_running_loop().time()
                if left <= pause:
                    raise BrokerError(f"broker did not confirm message {message_id}: {exc!r}") from exc
                log.warning("publisher.republish", message_id=message_id, error=repr(exc)[:200])
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._ready(), deadline - asyncio.get_running_loop().time())
            except DeliveryError as exc:
                # A nack: the broker did not take it. Once, on a fresh channel: RabbitMQ 3.10 can leave a
                # channel that lived through a node's loss nacking every publish to a quorum queue whose
                # leader moved (its client for the queue never found the new leader), while a new
                # channel publishes to the same queue at once (seen in
                # tests/integration/test_cluster_no_loss.py). A second nack is the broker's answer.
                if nacked or deadline - asyncio.get_running_loop().time() <= pause:
                    raise BrokerError(f"broker did not confirm message {message_id}: {exc!r}") from exc
                nacked = True
                log.warning("publisher.nacked", message_id=message_id, routing_key=routing_key)
                with contextlib.suppress(Exception):
                    await self._fresh_channel(generation)
            except (AMQPError, TimeoutError) as exc:
                # No confirm in time: the message may or may not be stored, so the caller must not
                # answer "accepted"; a retry may duplicate, which dedup absorbs.
                raise BrokerError(f"broker did not confirm message {message_id}: {exc!r}") from exc

    async def _fresh_channel(self, generation: int) -> None:
        """Reopen the channel, unless another publish did since *generation* (concurrent nacks reopen
        it once); publishes in flight on it meanwhile are published again (the _LOST path)."""
        async with self._reopening:
            if self._generation != generation:
                return
            self._generation += 1
            reopen = getattr(self._channel, "reopen", None)
            if reopen is not None:
                await self._channel.close()
                await reopen()

    async def _ready(self) -> None:
        """Until the channel is open again (a robust channel reopens by itself after a reconnection)."""
        ready = getattr(self._channel, "ready", None)
        if ready is not None:
            await ready()

    async def deliver(
        self, routing_key: str, body: bytes, *, message_id: str, headers: BusHeaders | None = None
    ) -> None:
        """Publish one copy of an envelope to the delivery exchange (an inbox, a group, or ``outbound``)."""
        amqp = {} if headers is None else to_amqp(headers)
        await self._publish(await self._exchange(), routing_key, body, message_id, amqp)

    async def retry(
        self,
        target_queue: str,
        delay_ms: int,
        body: bytes,
        *,
        message_id: str,
        attempt: int,
        headers: Mapping[str, HeaderValue] = {},
        wait_ms: int | None = None,
    ) -> None:
        """Park a message in *target_queue*'s retry queue; it comes back after *delay_ms* (the queue's
        TTL), or after *wait_ms* when given (at most *delay_ms*: jitter within the tier)."""
        queue = self._names.retry_queue(target_queue, delay_ms)
        await self._publish(
            self._channel.default_exchange,
            queue,
            body,
            message_id,
            {**headers, ATTEMPT_HEADER: attempt},
            None if wait_ms is None else min(wait_ms, delay_ms),
        )

    async def dead_letter(
        self,
        body: bytes,
        *,
        message_id: str,
        reason: str,
        source_queue: str,
        headers: Mapping[str, HeaderValue] = {},
    ) -> None:
        """Keep a message that cannot be delivered, with the reason an operator will read."""
        exchange = await self._channel.get_exchange(self._names.dead_letter_exchange, ensure=False)
        await self._publish(
            exchange,
            "",
            body,
            message_id,
            {
                **headers,
                REASON_HEADER: reason,
                SOURCE_HEADER: source_queue,
                DEAD_ID_HEADER: uuid.uuid4().hex,
            },
        )

    async def to_queue(
        self, queue: str, body: bytes, *, message_id: str, headers: Mapping[str, HeaderValue] = {}
    ) -> None:
        """Publish straight into *queue* through the default exchange (an operator's replay);
        :class:`~bus.errors.UnroutableError` when no such queue exists."""
        await self._publish(self._channel.default_exchange, queue, body, message_id, headers)

    async def send_back(self, dead_letter: DeadLetter, *, replay_tag: str) -> None:
        """An operator's replay (:func:`bus.replay.replay`): *dead_letter* back into its source queue
        with the headers it had (not those of its dead-lettering) and *replay_tag* in ``x-bus-replay``;
        :class:`~bus.errors.UnroutableError` when that queue is gone."""
        headers = {k: v for k, v in dead_letter.headers.items() if k not in NOT_RESTORED}
        headers[REPLAY_HEADER] = replay_tag
        await self.to_queue(
            dead_letter.source_queue,
            dead_letter.body or b"",
            message_id=dead_letter.message_id,
            headers=headers,
        )
