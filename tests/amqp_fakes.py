"""In-memory fakes of what the bus's consumers touch on RabbitMQ (after httpx's ``MockTransport``): a
message that records how it was settled, a channel whose queues hand messages to the consumer's
callback, and a publisher that records (or refuses) the copies. Everything writes to one shared
``journal``, so that a test can assert the order: the durable step first, the acknowledgement after."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bus.errors import BrokerError

Journal = list[tuple[Any, ...]]

BUS_ID = "5d0c6a52-2f6e-5a6e-9c55-0d9a8f3e7b21"
HEADERS: dict[str, Any] = {
    "x-bus-id": BUS_ID,
    "x-bus-sender": "000.00.01.H99",
    "x-bus-recipient": "000.01.21.H99",
    "x-bus-kind": "document",
    "x-bus-document-id": "000.00.01.H99,2026/11/20,12/STC",
}


class FakeMessage:
    """An incoming message: its body, id and headers, and how it was settled (``ack``, ``nack``,
    ``reject``, each with ``requeue``) in the journal."""

    def __init__(
        self,
        journal: Journal,
        *,
        body: bytes = b"<edXML/>",
        message_id: str | None = f"{BUS_ID}|000.01.21.H99",
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        self.journal = journal
        self.body = body
        self.message_id = message_id
        self.headers = dict(HEADERS if headers is None else headers)
        self.settled = asyncio.Event()
        self.fail_ack = False

    async def ack(self) -> None:
        if self.fail_ack:
            raise ConnectionError("channel closed")
        self.journal.append(("ack", self.message_id))
        self.settled.set()

    async def nack(self, requeue: bool = True) -> None:
        self.journal.append(("nack", self.message_id, requeue))
        self.settled.set()

    async def reject(self, requeue: bool = False) -> None:
        self.journal.append(("reject", self.message_id, requeue))
        self.settled.set()

    @property
    def settlements(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.journal if entry[0] in ("ack", "nack", "reject")]


Callback = Callable[[Any], Awaitable[None]]


class FakeQueue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.consumers: dict[str, Callback] = {}
        self.cancelled: list[str] = []
        self._tags = 0

    async def consume(self, callback: Callback) -> str:
        self._tags += 1
        tag = f"{self.name}-{self._tags}"
        self.consumers[tag] = callback
        return tag

    async def cancel(self, tag: str) -> None:
        self.cancelled.append(tag)
        self.consumers.pop(tag, None)

    async def deliver(self, message: FakeMessage) -> None:
        """Hand *message* to the queue's consumer, as the broker would."""
        [callback] = self.consumers.values()
        await callback(message)


class FakeChannel:
    """Queues by name; a consumer declares each (passively) before consuming it."""

    def __init__(self) -> None:
        self.queues: dict[str, FakeQueue] = {}

    async def declare_queue(self, name: str, *, passive: bool = False) -> FakeQueue:
        assert passive, "consumers declare the queues of declare_topology passively"
        return self.queues.setdefault(name, FakeQueue(name))


class FakePublisher:
    """The copies a consumer publishes; ``down`` makes every publish fail as a lost broker would."""

    def __init__(self, journal: Journal, *, down: bool = False) -> None:
        self.journal = journal
        self.down = down

    def _publish(self, *entry: Any) -> None:
        if self.down:
            raise BrokerError("broker did not confirm message")
        self.journal.append(entry)

    async def retry(
        self,
        target_queue: str,
        delay_ms: int,
        body: bytes,
        *,
        message_id: str,
        attempt: int,
        headers: Mapping[str, Any] = {},
        wait_ms: int | None = None,
    ) -> None:
        self._publish("retry", target_queue, delay_ms, message_id, attempt, dict(headers), wait_ms)

    async def dead_letter(
        self,
        body: bytes,
        *,
        message_id: str,
        reason: str,
        source_queue: str,
        headers: Mapping[str, Any] = {},
    ) -> None:
        self._publish("dead_letter", source_queue, message_id, reason, dict(headers))

    async def to_queue(
        self, queue: str, body: bytes, *, message_id: str, headers: Mapping[str, Any] = {}
    ) -> None:
        self._publish("to_queue", queue, message_id, dict(headers))


async def settled(*messages: FakeMessage, within_s: float = 5.0) -> None:
    """Wait until each message was acked, nacked or rejected."""
    async with asyncio.timeout(within_s):
        for message in messages:
            await message.settled.wait()
