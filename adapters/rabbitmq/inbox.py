"""The inbox worker: agency queues → the agencies' inboxes in the status store.

For each message: write it to the store (the envelope, its ``queued`` event, in one transaction), and
only then acknowledge it to RabbitMQ. A crash between the two redelivers the message, and the store's
unique message id absorbs the repeat: nothing lost, nothing twice. Several ``bus serve`` processes
consume the same queues; RabbitMQ gives each message to one of them at a time.

A message the worker cannot use (headers missing: not published by a bus) goes to the dead-letter
queue with the reason. When the store is down, the worker holds the message (unacknowledged, so still
safe in RabbitMQ) and retries the write with back-off; it never acknowledges what it has not written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.rabbitmq.consumer import CopyPublisherPort, QueueConsumer
from adapters.rabbitmq.holding import until_written
from adapters.rabbitmq.names import BrokerNames
from bus.delivery import InboxItem
from bus.topology import Agency, Topology

__all__ = ["InboxStorePort", "InboxWorker"]

log = structlog.get_logger("bus.inbox")


def _fields(item: InboxItem) -> dict[str, str]:
    return {
        "bus_id": item.bus_id,
        "document_id": item.document_id,
        "sender": item.sender,
        "recipient": item.addressed_to,
    }


class InboxStorePort(Protocol):
    async def store_inbox_many(self, items: Sequence[InboxItem]) -> list[bool]: ...


class InboxWorker(QueueConsumer[tuple[InboxItem, AbstractIncomingMessage]]):
    def __init__(
        self,
        channel: AbstractChannel,
        topology: Topology,
        names: BrokerNames,
        store: InboxStorePort,
        publisher: CopyPublisherPort,
        *,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        # Poison messages are dead-lettered through *publisher*; when that fails, they go back to
        # their queue after *store_retry_s*.
        super().__init__(channel, publisher, name="inbox", pause_s=store_retry_s)
        self._topology = topology
        self._names = names
        self._store = store
        self._store_retry_s = store_retry_s
        self._clock = clock

    async def start(self) -> None:
        """Consume every agency's inbox queue (declared beforehand by :func:`declare_topology`)."""
        self._start_writer(self._write_batches())
        for agency in self._topology.agencies:
            queue = self._names.inbox(agency.organ_id)
            await self._subscribe(queue, self._handler(agency, queue))

    async def _write_batches(self, limit: int = 200) -> None:
        """Write what the consumers took in batches (one transaction for many messages under load,
        one for a single message when traffic is light), then acknowledge each message."""
        while True:
            batch = [await self._pending.get()]
            while len(batch) < limit and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            now = self._clock()  # one time per batch: its timeline writes group into few statements
            batch = [(dataclasses.replace(item, received_at=now), message) for item, message in batch]
            added = await self._write([item for item, _ in batch])
            for (item, message), new in zip(batch, added, strict=True):
                self._pending.task_done()
                await self._ack(message, **_fields(item))
                if new:
                    log.info("inbox.queued", **_fields(item), kind=item.kind)

    async def _write(self, items: list[InboxItem]) -> list[bool]:
        return await until_written(
            lambda: self._store.store_inbox_many(items),
            first_delay_s=self._store_retry_s,
            event="inbox.store_failed",
            messages=len(items),
            bus_ids=sorted({i.bus_id for i in items})[:5],
        )

    def _handler(
        self, agency: Agency, queue_name: str
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def handle(message: AbstractIncomingMessage) -> None:
            await self._handle(agency, queue_name, message)

        return handle

    async def _handle(self, agency: Agency, queue_name: str, message: AbstractIncomingMessage) -> None:
        parsed = await self.parse(message, queue_name)
        if parsed is None:  # poison: dead-lettered with the reason
            return
        headers = parsed.headers
        item = InboxItem(
            id=0,
            message_id=parsed.message_id,
            agency=str(agency.organ_id),
            addressed_to=headers.recipient,
            bus_id=headers.bus_id,
            sender=headers.sender,
            kind=headers.kind,
            document_id=headers.document_id,
            received_at=self._clock(),
            body=parsed.body,
        )
        await self._pending.put((item, message))
