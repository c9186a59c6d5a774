"""The inbox worker: agency queues → the agencies' inboxes in the status store.

For each message: write it to the store (the envelope, its ``queued`` event, in one transaction), and
only then acknowledge it to RabbitMQ. A crash between the two redelivers the message, and the store's
unique message id absorbs the repeat: nothing lost, nothing twice. Several ``bus serve`` processes
consume the same queues; RabbitMQ gives each message to one of them at a time.

A copy of a large envelope (or of one to many recipients) carries a reference to the body store
instead of the envelope (issue 12), and the inbox entry keeps that reference; a copy that carries its
envelope has it kept in the body store by the same transaction, once for all its recipients. A
message the worker cannot use (headers missing: not published by a bus; a reference to a body the
store does not have) goes to the dead-letter queue with the reason. When the store is down, the
worker holds the message (unacknowledged, so still safe in RabbitMQ) and retries the write with
back-off; it never acknowledges what it has not written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.rabbitmq.consumer import Action, CopyPublisherPort, Decision, QueueConsumer
from adapters.rabbitmq.headers import HeaderValue
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
    async def missing_bodies(self, shas: Sequence[str]) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class _Taken:
    """A message taken off an agency's queue, waiting to be written."""

    item: InboxItem
    message: AbstractIncomingMessage
    queue: str
    headers: dict[str, HeaderValue]  # what a dead-letter copy of it carries


class InboxWorker(QueueConsumer[_Taken]):
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
            batch = [dataclasses.replace(t, item=dataclasses.replace(t.item, received_at=now)) for t in batch]
            batch = await self._without_missing_bodies(batch)
            added = await self._write([t.item for t in batch]) if batch else []
            for taken, new in zip(batch, added, strict=True):
                self._pending.task_done()
                await self._ack(taken.message, **_fields(taken.item))
                if new:
                    log.info("inbox.queued", **_fields(taken.item), kind=taken.item.kind)

    async def _without_missing_bodies(self, batch: list[_Taken]) -> list[_Taken]:
        """Dead-letter the copies whose reference names a body the store does not have (a database
        restored from an older backup): kept in the inbox, they would be entries nobody can fetch."""
        refs = sorted({t.item.body_sha256 for t in batch if t.item.body_sha256 is not None})
        if not refs:
            return batch
        missing = await until_written(
            lambda: self._store.missing_bodies(refs),
            first_delay_s=self._store_retry_s,
            event="inbox.store_failed",
            messages=len(batch),
        )
        kept = []
        for taken in batch:
            if taken.item.body_sha256 in missing:
                reason = (
                    f"the envelope it names ({taken.item.body_sha256}) is not in the body store: "
                    "this copy cannot be delivered"
                )
                log.error("inbox.body_missing", **_fields(taken.item), sha256=taken.item.body_sha256)
                await self.settle(
                    taken.message,
                    Decision(Action.DEAD_LETTER, reason),
                    queue=taken.queue,
                    headers=taken.headers,
                )
                self._pending.task_done()
            else:
                kept.append(taken)
        return kept

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
        ref = headers.body
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
            body=parsed.body if ref is None else None,
            body_sha256=None if ref is None else ref.sha256,
        )
        await self._pending.put(_Taken(item, message, queue_name, parsed.copy_headers()))
