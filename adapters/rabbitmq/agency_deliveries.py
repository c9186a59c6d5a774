"""AMQP agencies' deliveries: their inbox queues → their delivery queues, where their systems consume.

An AMQP agency's inbox queue binds the same routing keys as any agency's, so the intake and the
national-axis relay deliver to it unchanged; this worker consumes it in place of the inbox worker
(whose HTTP inbox the agency does not use). For each message: one confirmed, persistent copy into
``<prefix>.agency.<OrganId>`` with the message id ``<bus id>|<recipient>`` and the bus's five
``x-bus-*`` headers, then the acknowledgement. The ``queued`` event is written first: the agency may
acknowledge the envelope the moment it is in its queue, and only a delivery that has reached it may be
acknowledged.
The bus's own queue is an inner detail that the agency's queue does not follow: a copy there that names
its envelope in the body store instead of carrying it (issue 12's claim check: large envelopes, wide
fan-outs) goes to the agency with the envelope read from the store, whole, since an AMQP message is one
body; a reference to a body the store does not have is dead-lettered with that reason, and an empty
envelope is never forwarded.

A crash after the copy and before the acknowledgement copies the message again: an agency's queue may
hold an envelope twice after a failure, and its system keeps the first by message id
(docs/amqp-agencies.md). A message that is not the bus's is dead-lettered with the reason; when the
copy cannot be made (broker trouble, the agency's queue over its limit) the message goes back to its
queue after a pause; while the store is down the message is held and the event written again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.rabbitmq.consumer import REQUEUE, Action, CopyPublisherPort, Decision, QueueConsumer
from adapters.rabbitmq.headers import BUS_HEADERS, HeaderValue
from adapters.rabbitmq.holding import until_written
from adapters.rabbitmq.names import BrokerNames
from adapters.rabbitmq.parser import BusMessage
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.errors import BrokerError, StoreError, StoreUnavailableError
from bus.headers import BusHeaders
from bus.topology import Agency, AgencyTransport, Topology

__all__ = ["AgencyDeliveries", "AgencyPublisherPort", "QueuedStorePort"]

log = structlog.get_logger("bus.agency")

MAX_STORE_DELAY_S = 30.0


class AgencyPublisherPort(CopyPublisherPort, Protocol):
    async def to_queue(
        self, queue: str, body: bytes, *, message_id: str, headers: Mapping[str, HeaderValue] = ...
    ) -> None: ...


class QueuedStorePort(Protocol):
    async def record(self, event: TimelineEvent, *, key: str) -> bool: ...
    async def document(self, bus_id: str) -> AcceptedDocument | None: ...
    async def read_body(self, sha256: str) -> bytes | None: ...


def _agency_headers(headers: BusHeaders) -> dict[str, HeaderValue]:
    """What a delivery tells the agency beside the envelope: the five ``x-bus-*`` headers, its contract
    (docs/amqp-agencies.md), whatever else the bus's own copy carried."""
    return {name: getattr(headers, field) for field, name in BUS_HEADERS.items()}


class AgencyDeliveries(QueueConsumer[None]):
    def __init__(
        self,
        channel: AbstractChannel,
        topology: Topology,
        names: BrokerNames,
        store: QueuedStorePort,
        publisher: AgencyPublisherPort,
        *,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(channel, publisher, name="agency_deliveries", pause_s=store_retry_s)
        self._agencies = [a for a in topology.agencies if a.transport is AgencyTransport.AMQP]
        self._names = names
        self._store = store
        self._publisher = publisher
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._inflight: set[asyncio.Task[object]] = set()
        self.delivered = 0  # copies this process put in agencies' queues (tests, bench)

    async def start(self) -> None:
        """Consume the inbox queue of every AMQP agency (declared by :func:`declare_topology`)."""
        for agency in self._agencies:
            await self._subscribe(self._names.inbox(agency.organ_id), self._handler(agency))
        log.info("agency_deliveries.consuming", agencies=len(self._agencies))

    async def stop(self, *, drain_s: float = 5.0) -> None:
        await self._pause()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=drain_s)
        await super().stop(drain_s=0)

    def _handler(self, agency: Agency) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def handle(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            try:
                await self._handle(agency, message)
            finally:
                self._inflight.discard(task)

        return handle

    async def _handle(self, agency: Agency, message: AbstractIncomingMessage) -> None:
        source = self._names.inbox(agency.organ_id)
        parsed = await self.parse(message, source)
        if parsed is None:  # poison: dead-lettered with the reason
            return
        fields = parsed.headers.log_fields()
        body = await self._envelope(parsed)
        if not body:
            ref = parsed.headers.body
            reason = (
                f"the envelope it names ({ref.sha256}) is not in the body store"
                if ref is not None
                else "the message carries no envelope"
            )
            log.error("agency_deliveries.no_body", **fields, reason=reason)
            decision = Decision(Action.DEAD_LETTER, f"{reason}: this copy cannot be delivered")
            await self.settle(message, decision, queue=source, headers=parsed.copy_headers())
            return
        await self._queued(parsed)
        try:
            await self._publisher.to_queue(
                self._names.agency_queue(agency.organ_id),
                body,
                message_id=parsed.message_id,
                headers=_agency_headers(parsed.headers),
            )
        except BrokerError as exc:
            log.error("agency_deliveries.copy_failed", **fields, error=str(exc)[:300])
            await self.settle(message, REQUEUE, queue=source)
            return
        self.delivered += 1
        await self._ack(message, **fields)
        log.info("agency_deliveries.queued", **fields, agency=str(agency.organ_id))

    async def _envelope(self, parsed: BusMessage) -> bytes | None:
        """The envelope of the copy: its own, or read from the body store (tried again while the store
        fails); None when the store does not have it."""
        ref = parsed.headers.body
        if ref is None:
            return parsed.body
        return await until_written(
            lambda: self._store.read_body(ref.sha256),
            first_delay_s=self._store_retry_s,
            event="agency_deliveries.store_failed",
            **parsed.headers.log_fields(),
        )

    async def _queued(self, parsed: BusMessage) -> None:
        """The ``queued`` event (the inbox store's key: written once however often this runs), tried
        again while the store fails. A delivery whose document this store never recorded (a database
        restored from an older backup) still reaches the agency; it has no timeline to write on."""
        headers = parsed.headers
        given = headers.body.sha256 if headers.body is not None else hashlib.sha256(parsed.body).hexdigest()
        event = TimelineEvent(
            headers.bus_id, headers.recipient, DeliveryState.QUEUED, self._clock(), sha256=given
        )
        delay = self._store_retry_s
        while True:
            try:
                await self._store.record(event, key=f"{headers.bus_id}|{headers.recipient}|queued")
                return
            except StoreError as exc:
                if not isinstance(exc, StoreUnavailableError) and await self._unknown(headers.bus_id):
                    log.warning("agency_deliveries.no_timeline", **headers.log_fields())
                    return
                log.error("agency_deliveries.store_failed", **headers.log_fields(), error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_STORE_DELAY_S)

    async def _unknown(self, bus_id: str) -> bool:
        try:
            return await self._store.document(bus_id) is None
        except StoreError:
            return False
