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

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from adapters.rabbitmq.holding import until_written
from adapters.rabbitmq.names import BrokerNames
from adapters.rabbitmq.publisher import Publisher
from adapters.store.store import InboxItem
from bus.topology import Agency, Topology

__all__ = ["InboxStorePort", "InboxWorker"]

log = structlog.get_logger("bus.inbox")

_REQUIRED = ("x-bus-id", "x-bus-sender", "x-bus-recipient", "x-bus-kind", "x-bus-document-id")
# Log fields of an envelope (issue 5: every line about one carries them) and the headers they come from.
_LOGGED = {
    "bus_id": "x-bus-id",
    "document_id": "x-bus-document-id",
    "sender": "x-bus-sender",
    "recipient": "x-bus-recipient",
}


def _fields(item: InboxItem) -> dict[str, str]:
    return {
        "bus_id": item.bus_id,
        "document_id": item.document_id,
        "sender": item.sender,
        "recipient": item.addressed_to,
    }


class InboxStorePort(Protocol):
    async def store_inbox_many(self, items: Sequence[InboxItem]) -> list[bool]: ...


class InboxWorker:
    def __init__(
        self,
        channel: AbstractChannel,
        topology: Topology,
        names: BrokerNames,
        store: InboxStorePort,
        publisher: Publisher,
        *,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._channel = channel
        self._topology = topology
        self._names = names
        self._store = store
        self._publisher = publisher
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._pending: asyncio.Queue[tuple[InboxItem, AbstractIncomingMessage]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Consume every agency's inbox queue (declared beforehand by :func:`declare_topology`)."""
        self._writer = asyncio.create_task(self._write_batches())
        for agency in self._topology.agencies:
            # Declared (passively) rather than looked up: a robust channel re-creates only the queues
            # declared through it, and with them their consumers, after the broker comes back.
            queue = await self._channel.declare_queue(self._names.inbox(agency.organ_id), passive=True)
            tag = await queue.consume(self._handler(agency, queue.name))
            self._consumers.append((queue, tag))

    async def stop(self, *, drain_s: float = 5.0) -> None:
        """Stop taking new messages and write what was taken (for up to *drain_s*); anything left
        unacknowledged goes back to its queue when the channel closes."""
        for queue, tag in self._consumers:
            await queue.cancel(tag)
        self._consumers.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), drain_s)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

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
                try:
                    await message.ack()
                except Exception as exc:  # the channel died: the broker redelivers, the store absorbs it
                    log.warning("inbox.ack_failed", **_fields(item), error=type(exc).__name__)
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
        headers = {k: v for k, v in (message.headers or {}).items() if isinstance(v, str | bytes)}
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
        missing = [name for name in _REQUIRED if not text.get(name)]
        if missing or not message.message_id:
            reason = f"not a bus message: missing {', '.join(missing) or 'message id'}"
            # What the message does carry (cut short: it is not the bus's), to find where it came from.
            known = {field: text[header][:100] for field, header in _LOGGED.items() if text.get(header)}
            log.warning(
                "inbox.poison", queue=queue_name, reason=reason, message_id=message.message_id, **known
            )
            try:
                await self._publisher.dead_letter(
                    message.body,
                    message_id=message.message_id or "(none)",
                    reason=reason,
                    source_queue=queue_name,
                )
            except Exception as exc:  # keep it in its queue; try again after a pause
                log.error("inbox.dead_letter_failed", queue=queue_name, error=type(exc).__name__)
                await asyncio.sleep(self._store_retry_s)
                await message.nack(requeue=True)
                return
            await message.ack()
            return
        item = InboxItem(
            id=0,
            message_id=message.message_id,
            agency=str(agency.organ_id),
            addressed_to=text["x-bus-recipient"],
            bus_id=text["x-bus-id"],
            sender=text["x-bus-sender"],
            kind=text["x-bus-kind"],
            document_id=text["x-bus-document-id"],
            received_at=self._clock(),
            body=message.body,
        )
        await self._pending.put((item, message))
