"""Dead letters: ``<prefix>.deadletter`` → the status store, and from there back to a queue on request.

Messages reach the dead-letter queue two ways:

* the bus put them there (:meth:`Publisher.dead_letter`): ``x-bus-reason``, ``x-bus-source-queue`` and
  ``x-bus-dead-id`` (one id per dead-lettering), plus the delivery's ``x-bus-*`` headers when it was one;
* the broker did (a quorum queue's rejected or over-delivered message): ``x-death`` names the queue and
  the reason.

:class:`DeadLetterWorker` writes each one to the store and only then acknowledges it (the inbox worker's
order: a crash in between redelivers the message, and its ``dead_key`` makes the repeat write nothing).
While the store is down it holds the message and retries; it never acknowledges what it has not
written. Sending stored dead letters back (``bus replay``) is :mod:`bus.replay`, through
:meth:`Publisher.send_back <adapters.rabbitmq.publisher.Publisher.send_back>`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.rabbitmq.consumer import QueueConsumer
from adapters.rabbitmq.headers import (
    DEAD_ID_HEADER,
    REASON_HEADER,
    REPLAY_HEADER,
    SOURCE_HEADER,
    bus_fields,
    restorable,
)
from adapters.rabbitmq.holding import until_written
from adapters.rabbitmq.names import BrokerNames
from bus.delivery import DeadLetter

__all__ = ["DeadLetterStorePort", "DeadLetterWorker", "read_dead_letter"]

log = structlog.get_logger("bus.deadletters")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):  # pamqp hands over a non-UTF-8 string as bytes
        value = value.decode("utf-8", errors="replace")
    # PostgreSQL text cannot hold NUL.
    return value.replace("\x00", "") if isinstance(value, str) else None


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "replace")).hexdigest()


def read_dead_letter(
    headers: Mapping[str, Any], *, message_id: str | None, body: bytes, at: dt.datetime
) -> DeadLetter:
    """What the store keeps of a message of the dead-letter queue. Never raises: a message with
    unusable headers is still kept, with what can be read from it."""
    deaths = headers.get("x-death")
    death: Mapping[str, Any] = (
        deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping) else {}
    )
    death_queue = _text(death.get("queue")) or _text(headers.get("x-first-death-queue"))
    death_reason = _text(death.get("reason")) or _text(headers.get("x-first-death-reason"))
    source = _text(headers.get(SOURCE_HEADER)) or death_queue or ""
    kept = restorable(headers)
    body_sha = hashlib.sha256(body).hexdigest()

    reason = _text(headers.get(REASON_HEADER))
    if reason is None and (death_queue or death_reason):
        reason = f"broker dead-lettered from {death_queue or '(unknown)'}: {death_reason or '(no reason)'}"
    dead_id = _text(headers.get(DEAD_ID_HEADER))
    if dead_id and len(dead_id) <= 64:
        key = dead_id
    elif death:
        # The same dead-lettering redelivered has the same x-death entry; the body and the replay tag
        # tell apart messages without an id, and a message that died again after a replay.
        count, time, replayed = death.get("count"), death.get("time"), _text(headers.get(REPLAY_HEADER))
        key = "x-death:" + _digest(message_id, death_queue, death_reason, count, time, replayed, body_sha)
    else:
        key = "unknown:" + _digest(message_id, json.dumps(kept, sort_keys=True), body_sha)
    # A header longer than its column is not what the bus wrote: it is left out rather than made to
    # fail the write (and hold the message) forever.
    fields = bus_fields(headers)
    return DeadLetter(
        dead_key=key,
        message_id=(_text(message_id) or "(none)")[:256],
        source_queue=source[:256],
        reason=reason or "dead-lettered without a reason (no x-bus-reason, no x-death header)",
        dead_at=at,
        bus_id=fields["bus_id"],
        recipient=fields["recipient"],
        sender=fields["sender"],
        document_id=fields["document_id"],
        kind=fields["kind"],
        headers=kept,
        body=body,
    )


class DeadLetterStorePort(Protocol):
    async def store_dead_letter(self, item: DeadLetter) -> bool: ...


class DeadLetterWorker(QueueConsumer[AbstractIncomingMessage]):
    """Consumes the dead-letter queue into the store (declared beforehand by ``declare_topology``)."""

    def __init__(
        self,
        channel: AbstractChannel,
        names: BrokerNames,
        store: DeadLetterStorePort,
        *,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        # No publisher: a dead letter is only ever written to the store, never dead-lettered again.
        super().__init__(channel, None, name="deadletter", pause_s=store_retry_s)
        self._names = names
        self._store = store
        self._store_retry_s = store_retry_s
        self._clock = clock

    async def start(self) -> None:
        self._start_writer(self._write_each())
        await self._subscribe(self._names.dead_letter_queue, self._pending.put)

    async def _write_each(self) -> None:
        # One at a time: dead letters are rare, and each is worth its own transaction and log line.
        while True:
            message = await self._pending.get()
            try:
                item = read_dead_letter(
                    message.headers or {}, message_id=message.message_id, body=message.body, at=self._clock()
                )
                new = await self._write(item)
                # Should the ack fail (the channel died), the broker redelivers: the dead_key absorbs it.
                await self._ack(message, dead_key=item.dead_key)
                if new:
                    log.warning(
                        "deadletter.stored",
                        message_id=item.message_id,
                        bus_id=item.bus_id,
                        recipient=item.recipient,
                        source_queue=item.source_queue,
                        reason=item.reason,
                    )
            finally:
                self._pending.task_done()

    async def _write(self, item: DeadLetter) -> bool:
        # Held unacknowledged while the store is down: a nack would put it straight back here.
        return await until_written(
            lambda: self._store.store_dead_letter(item),
            first_delay_s=self._store_retry_s,
            event="deadletter.store_failed",
            message_id=item.message_id,
        )
