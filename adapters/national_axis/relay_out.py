"""Relay out: the outbound queue → the national axis.

Each message is one envelope for one recipient outside the province. It is sent with ``sendEdoc``; the
timeline records every attempt. A temporary failure parks the message in a retry queue whose TTL
returns it later (the back-off lives in RabbitMQ, not in a sleeping task); a refusal with a reason, or
too many attempts, dead-letters it with the reason (the decision is
:func:`adapters.rabbitmq.consumer.decide`). A message is acknowledged only after the next durable step
(the event written, the retry or dead-letter copy confirmed). A crash between ``sendEdoc`` and the
acknowledgement sends the envelope again; the receiving axis's duplicate suppression absorbs it.
While the circuit is open (:mod:`adapters.national_axis.breaker`) the relay does not consume.

A copy that names its envelope in the body store (issue 12) is sent with the envelope read from there;
what is kept of the send is the reference, not a second copy. A reference to a body the store does
not have is a dead letter with that reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.national_axis.breaker import CircuitBreaker
from adapters.national_axis.client import NationalAxisClient
from adapters.rabbitmq import (
    REPLAY_HEADER,
    RESEND_HEADER,
    Action,
    BrokerNames,
    BusMessage,
    CopyPublisherPort,
    Decision,
    QueueConsumer,
    cancel_task,
    decide,
    until_written,
)
from bus.delivery import AxisSend, DeliveryState, TimelineEvent
from bus.errors import AxisRejectedError, AxisUnavailableError

__all__ = ["EventStore", "RelayOut"]

log = structlog.get_logger("bus.relay")


class EventStore(Protocol):
    async def record(self, event: TimelineEvent, *, key: str) -> bool: ...
    async def record_axis_send(self, send: AxisSend, event: TimelineEvent, *, key: str) -> None: ...
    async def read_body(self, sha256: str) -> bytes | None: ...


def _attempt_key(message: BusMessage, attempt: int) -> str:
    """Event key of one attempt; an operator's replay or a resend after a loss starts the count again,
    so they are part of it."""
    again = "".join(str(message.carried.get(name, "")) for name in (REPLAY_HEADER, RESEND_HEADER))
    return f"{message.headers.bus_id}|{message.headers.recipient}|axis|{again}|{attempt}"


class RelayOut(QueueConsumer[None]):
    def __init__(
        self,
        channel: AbstractChannel,
        names: BrokerNames,
        store: EventStore,
        publisher: CopyPublisherPort,
        client: NationalAxisClient,
        breaker: CircuitBreaker,
        *,
        retry_delays_ms: Sequence[int],
        jitter: float = 0.2,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(channel, publisher, name="relay_out", pause_s=store_retry_s)
        self._queue = names.outbound_queue
        self._store = store
        self._client = client
        self._breaker = breaker
        self._delays = tuple(retry_delays_ms)
        self._jitter = jitter
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._probe: asyncio.Task[None] | None = None
        # What this process did, for bench, tests and metrics: sendEdoc calls; envelopes the axis took;
        # temporary failures parked for a retry; refusals by the axis. (``dead_lettered``, of the base:
        # refusals, attempts used up, messages that are not the bus's.)
        self.attempts = 0
        self.sent = 0
        self.retried = 0
        self.rejected = 0

    async def start(self) -> None:
        await self._subscribe(self._queue, self._handle)
        log.info("relay_out.consuming", queue=self._queue)
        self._probe = asyncio.create_task(self._watch())

    async def stop(self, *, drain_s: float = 0.0) -> None:
        await cancel_task(self._probe)
        self._probe = None
        await super().stop(drain_s=drain_s)

    async def _consume(self) -> None:
        if not self.consuming:
            await self._resume()
            log.info("relay_out.consuming", queue=self._queue)

    async def _hold(self) -> None:
        if self.consuming:
            await self._pause()
            log.info("relay_out.paused", queue=self._queue)

    async def _watch(self) -> None:
        """Pause while the circuit is open; probe the axis every ``open_s``; resume on an answer.
        A failure here (the channel reconnecting, say) is logged and the round tried again: if this
        task died, an open circuit would never close and the whole link would stall in silence."""
        while True:
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("relay_out.watch_failed", error=repr(exc))
                await asyncio.sleep(min(self._breaker.open_s, 5.0))
                self._breaker.changed.set()  # look at the circuit again

    async def _watch_once(self) -> None:
        await self._breaker.changed.wait()
        self._breaker.changed.clear()
        if not self._breaker.is_open:
            await self._consume()
            return
        await self._hold()
        while self._breaker.is_open:
            await asyncio.sleep(self._breaker.open_s)
            try:
                await self._client.count_received()
            except AxisUnavailableError as exc:
                log.info("axis.probe_failed", error=str(exc))
                continue
            except AxisRejectedError:
                pass  # it answered: it is up
            self._breaker.success()
        self._breaker.changed.clear()
        await self._consume()

    async def _record(self, event: TimelineEvent, key: str, send: AxisSend | None = None) -> None:
        async def write() -> None:
            if send is None:
                await self._store.record(event, key=key)
            else:
                await self._store.record_axis_send(send, event, key=key)

        await until_written(
            write, first_delay_s=self._store_retry_s, event="relay_out.store_failed", bus_id=event.bus_id
        )

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        parsed = await self.parse(message, self._queue)
        if parsed is None:  # poison: dead-lettered with the reason
            return
        with structlog.contextvars.bound_contextvars(**parsed.headers.log_fields()):
            await self._relay(message, parsed)

    async def _relay(self, message: AbstractIncomingMessage, parsed: BusMessage) -> None:
        bus_id, recipient = parsed.headers.bus_id, parsed.headers.recipient
        attempt = parsed.attempt + 1
        key = _attempt_key(parsed, attempt)
        context = {"bus_id": bus_id, "recipient": recipient, "attempt": attempt}
        if self._breaker.is_open:
            # Taken just before the circuit opened: parked in the first back-off tier, no attempt
            # used (a requeue would bounce straight back, and count towards a delivery limit).
            park = Decision(Action.RETRY, "the circuit is open", self._delays[0], attempt - 1)
            await self.settle(message, park, queue=self._queue, headers=parsed.copy_headers())
            return
        body = await self._envelope(parsed)
        if body is None:
            ref = parsed.headers.body
            reason = f"the envelope it names ({ref.sha256 if ref else '?'}) is not in the body store"
            log.error("relay_out.body_missing", **context, reason=reason)
            gone = Decision(Action.DEAD_LETTER, reason)
            await self.settle(message, gone, queue=self._queue, headers=parsed.copy_headers())
            return
        self.attempts += 1
        try:
            doc_id = await self._client.send_edoc(
                body,
                sender=parsed.headers.sender,
                to=[recipient],
                message_type="status" if parsed.headers.kind == "status" else "edoc",
            )
        except AxisUnavailableError as exc:
            self._breaker.failure(str(exc))
            await self._temporary(message, parsed, attempt, exc)
            return
        except AxisRejectedError as exc:
            self._breaker.success()
            self.rejected += 1
            log.warning("relay_out.rejected", **context, reason=str(exc))
            await self._record(
                TimelineEvent(
                    bus_id, recipient, DeliveryState.FAILED, self._clock(), f"lần gửi {attempt}: {exc}"
                ),
                key,
            )
            decision = decide(exc, attempt=attempt)
            await self.settle(message, decision, queue=self._queue, headers=parsed.copy_headers())
            return
        self._breaker.success()
        now = self._clock()
        # The body is kept until the axis lists it as sent (the reconciler checks): an axis that
        # answers OK and then loses the envelope gets it again.
        kept = AxisSend(
            0,
            bus_id,
            recipient,
            doc_id,
            parsed.message_id,
            parsed.headers.kind,
            parsed.copy_headers(),
            parsed.body,
            now,
        )
        await self._record(
            TimelineEvent(
                bus_id,
                recipient,
                DeliveryState.SENT_TO_AXIS,
                now,
                f"trục quốc gia nhận, mã {doc_id} (lần gửi {attempt})",
            ),
            key,
            kept,
        )
        await self._ack(message, bus_id=bus_id, recipient=recipient)
        self.sent += 1
        log.info("relay_out.sent", **context, axis_doc_id=doc_id)

    async def _envelope(self, parsed: BusMessage) -> bytes | None:
        """The envelope to send: the copy's own, or read from the body store (through its outages)."""
        ref = parsed.headers.body
        if ref is None:
            return parsed.body
        return await until_written(
            lambda: self._store.read_body(ref.sha256),
            first_delay_s=self._store_retry_s,
            event="relay_out.store_failed",
            bus_id=parsed.headers.bus_id,
        )

    async def _temporary(
        self, message: AbstractIncomingMessage, parsed: BusMessage, attempt: int, error: AxisUnavailableError
    ) -> None:
        bus_id, recipient = parsed.headers.bus_id, parsed.headers.recipient
        decision = decide(error, attempt=attempt, delays=self._delays)
        if decision.action is Action.DEAD_LETTER:
            log.error("relay_out.gave_up", bus_id=bus_id, recipient=recipient, attempts=attempt)
            await self._record(
                TimelineEvent(
                    bus_id, recipient, DeliveryState.FAILED, self._clock(), f"lần gửi {attempt}: {error}"
                ),
                _attempt_key(parsed, attempt),
            )
            await self.settle(message, decision, queue=self._queue, headers=parsed.copy_headers())
            return
        delay = decision.delay_ms
        await self._record(
            TimelineEvent(
                bus_id,
                recipient,
                DeliveryState.RETRYING,
                self._clock(),
                f"lần gửi {attempt} lỗi tạm thời: {error}; thử lại sau {delay / 1000:g} giây",
            ),
            _attempt_key(parsed, attempt),
        )
        # Jitter: a burst of failures does not come back as one burst.
        wait_ms = int(delay * random.uniform(1 - self._jitter, 1))  # noqa: S311 - not security
        if await self.settle(
            message, decision, queue=self._queue, headers=parsed.copy_headers(), wait_ms=wait_ms
        ):
            self.retried += 1
            log.warning(
                "relay_out.retrying", bus_id=bus_id, recipient=recipient, attempt=attempt, in_ms=delay
            )
