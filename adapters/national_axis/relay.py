"""The link between a province's axis and the national axis.

**Relay out** (:class:`RelayOut`) drains the outbound queue: each message is one envelope for one
recipient outside the province. It is sent with ``sendEdoc``; the timeline records every attempt.
A temporary failure parks the message in a retry queue whose TTL returns it later (the back-off lives
in RabbitMQ, not in a sleeping task); a refusal with a reason, or too many attempts, dead-letters it
with the reason. A message is acknowledged only after the next durable step (the event written, the
retry or dead-letter copy confirmed). A crash between ``sendEdoc`` and the acknowledgement sends the
envelope again; the receiving axis's duplicate suppression absorbs it.

**Circuit breaker** (:class:`CircuitBreaker`): after several temporary failures in a row the relay
stops consuming (the backlog waits in the outbound queue, attempts are not used up) and a probe asks
the axis a cheap question every little while; the first answer closes the circuit and sending resumes.

**Relay in** (:class:`RelayIn`) polls what the axis holds for this province's agencies, takes each
envelope through the intake like any other (checks, signature, duplicate suppression, local inboxes),
and only then tells the axis ``done``. A crash in between makes the axis deliver it again, which the
duplicate check absorbs. An envelope the intake refuses is kept in the dead-letter queue with the
reason, and the axis is told ``fail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from adapters.national_axis.client import NationalAxisClient, text_of
from adapters.rabbitmq.headers import ATTEMPT_HEADER, REPLAY_HEADER
from adapters.rabbitmq.holding import until_written
from adapters.rabbitmq.names import BrokerNames
from adapters.rabbitmq.publisher import Publisher
from adapters.store.store import AxisSend
from bus.delivery import DeliveryState, TimelineEvent
from bus.errors import AxisRejectedError, AxisUnavailableError, DuplicateEnvelopeError, InputError
from bus.intake import Intake

__all__ = ["AxisLink", "CircuitBreaker", "CircuitState", "Reconciler", "RelayIn", "RelayOut"]

log = structlog.get_logger("bus.relay")

_REQUIRED = ("x-bus-id", "x-bus-sender", "x-bus-recipient", "x-bus-kind")
AXIS_DOC_HEADER = "x-bus-axis-doc-id"  # the national axis's DocId of an envelope that came from it
RESEND_HEADER = "x-bus-resend-of"  # on a copy sent again because the axis lost one: the lost DocId


class EventStore(Protocol):
    async def record(self, event: TimelineEvent, *, key: str) -> bool: ...
    async def record_axis_send(self, send: AxisSend, event: TimelineEvent, *, key: str) -> None: ...


class RefusalStore(Protocol):
    async def has_dead_letter(self, message_id: str) -> bool: ...


class CircuitState(enum.StrEnum):
    CLOSED = "closed"  # sending
    OPEN = "open"  # the axis is down: not sending, probing


class CircuitBreaker:
    """Counts temporary failures in a row; *threshold* of them open the circuit for *open_s*."""

    def __init__(
        self, *, threshold: int = 5, open_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self.state = CircuitState.CLOSED
        self.opened_at: float | None = None
        # For operators (the dashboard's axis page): the last answer and the last failure.
        self.last_success_at: dt.datetime | None = None
        self.last_failure_at: dt.datetime | None = None
        self.last_error: str | None = None
        self.openings = 0  # times the circuit opened (metrics)
        self.changed = asyncio.Event()

    def success(self) -> None:
        self._failures = 0
        self.last_success_at = dt.datetime.now(dt.UTC)
        if self.state is CircuitState.OPEN:
            self.state = CircuitState.CLOSED
            self.opened_at = None
            log.info("axis.circuit_closed")
            self.changed.set()

    def failure(self, error: str | None = None) -> None:
        self._failures += 1
        self.last_error = error or self.last_error
        self.last_failure_at = dt.datetime.now(dt.UTC)
        if self.state is CircuitState.CLOSED and self._failures >= self.threshold:
            self.state = CircuitState.OPEN
            self.opened_at = self._clock()
            self.openings += 1
            log.warning("axis.circuit_open", failures=self._failures, probe_every_s=self.open_s)
            self.changed.set()

    @property
    def is_open(self) -> bool:
        return self.state is CircuitState.OPEN

    @property
    def failures(self) -> int:
        """Temporary failures in a row."""
        return self._failures

    def open_since(self, now: dt.datetime) -> dt.datetime | None:
        """When the circuit opened, as a time of day (it keeps a monotonic clock)."""
        if self.opened_at is None:
            return None
        return now - dt.timedelta(seconds=self._clock() - self.opened_at)


def _text_headers(message: AbstractIncomingMessage) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (message.headers or {}).items():
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8", "replace")
        elif isinstance(value, str | int) and not isinstance(value, bool):
            out[key] = str(value)
    return out


def _envelope_fields(headers: Mapping[str, object]) -> dict[str, str]:
    """What every log line about this envelope carries (issue 5: operators search by any of them)."""
    fields = {
        "bus_id": headers.get("x-bus-id"),
        "document_id": headers.get("x-bus-document-id"),
        "sender": headers.get("x-bus-sender"),
        "recipient": headers.get("x-bus-recipient"),
    }
    return {k: str(v) for k, v in fields.items() if v}


def _attempt_key(headers: dict[str, str], attempt: int) -> str:
    """Event key of one attempt; an operator's replay or a resend after a loss starts the count again,
    so they are part of it."""
    again = headers.get(REPLAY_HEADER, "") + headers.get(RESEND_HEADER, "")
    return f"{headers['x-bus-id']}|{headers['x-bus-recipient']}|axis|{again}|{attempt}"


class RelayOut:
    def __init__(
        self,
        channel: AbstractChannel,
        names: BrokerNames,
        store: EventStore,
        publisher: Publisher,
        client: NationalAxisClient,
        breaker: CircuitBreaker,
        *,
        retry_delays_ms: Sequence[int],
        jitter: float = 0.2,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._channel = channel
        self._names = names
        self._store = store
        self._publisher = publisher
        self._client = client
        self._breaker = breaker
        self._delays = tuple(retry_delays_ms)
        self._jitter = jitter
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._probe: asyncio.Task[None] | None = None
        # What this process did, for bench, tests and metrics: sendEdoc calls; envelopes the axis took;
        # temporary failures parked for a retry; refusals by the axis; messages dead-lettered (refusals,
        # attempts used up, messages that are not the bus's).
        self.attempts = 0
        self.sent = 0
        self.retried = 0
        self.rejected = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        # Declared passively (not looked up) so that a robust channel restores the consumer.
        self._queue = await self._channel.declare_queue(self._names.outbound_queue, passive=True)
        await self._resume()
        self._probe = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        await _cancel(self._probe)
        self._probe = None
        await self._pause()

    async def _resume(self) -> None:
        if self._queue is not None and self._tag is None:
            self._tag = await self._queue.consume(self._handle)
            log.info("relay_out.consuming", queue=self._queue.name)

    async def _pause(self) -> None:
        if self._queue is not None and self._tag is not None:
            tag, self._tag = self._tag, None
            with contextlib.suppress(Exception):
                await self._queue.cancel(tag)
            log.info("relay_out.paused", queue=self._queue.name)

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
            await self._resume()
            return
        await self._pause()
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
        await self._resume()

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
        headers = _text_headers(message)
        with structlog.contextvars.bound_contextvars(**_envelope_fields(headers)):
            await self._relay(message, headers)

    async def _relay(self, message: AbstractIncomingMessage, headers: dict[str, str]) -> None:
        missing = [name for name in _REQUIRED if not headers.get(name)]
        if missing or not message.message_id:
            await self._dead(message, headers, f"not a bus message: missing {', '.join(missing) or 'id'}")
            return
        bus_id, recipient = headers["x-bus-id"], headers["x-bus-recipient"]
        attempt = int(headers.get(ATTEMPT_HEADER, "0") or 0) + 1
        key = _attempt_key(headers, attempt)
        context = {"bus_id": bus_id, "recipient": recipient, "attempt": attempt}
        if self._breaker.is_open:
            # Taken just before the circuit opened: parked in the first back-off tier, no attempt
            # used (a requeue would bounce straight back, and count towards a delivery limit).
            await self._park(message, headers, attempt - 1)
            return
        self.attempts += 1
        try:
            doc_id = await self._client.send_edoc(
                message.body,
                sender=headers["x-bus-sender"],
                to=[recipient],
                message_type="status" if headers["x-bus-kind"] == "status" else "edoc",
            )
        except AxisUnavailableError as exc:
            self._breaker.failure(str(exc))
            await self._temporary(message, headers, attempt, str(exc))
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
            await self._dead(message, headers, f"{exc} (attempt {attempt})")
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
            message.message_id,
            headers["x-bus-kind"],
            {k: v for k, v in headers.items() if k != ATTEMPT_HEADER},
            message.body,
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
        await message.ack()
        self.sent += 1
        log.info("relay_out.sent", **context, axis_doc_id=doc_id)

    async def _temporary(
        self, message: AbstractIncomingMessage, headers: dict[str, str], attempt: int, reason: str
    ) -> None:
        bus_id, recipient = headers["x-bus-id"], headers["x-bus-recipient"]
        if attempt > len(self._delays):
            log.error("relay_out.gave_up", bus_id=bus_id, recipient=recipient, attempts=attempt)
            await self._record(
                TimelineEvent(
                    bus_id, recipient, DeliveryState.FAILED, self._clock(), f"lần gửi {attempt}: {reason}"
                ),
                _attempt_key(headers, attempt),
            )
            await self._dead(message, headers, f"gave up after {attempt} attempts: {reason}")
            return
        delay = self._delays[attempt - 1]
        await self._record(
            TimelineEvent(
                bus_id,
                recipient,
                DeliveryState.RETRYING,
                self._clock(),
                f"lần gửi {attempt} lỗi tạm thời: {reason}; thử lại sau {delay / 1000:g} giây",
            ),
            _attempt_key(headers, attempt),
        )
        kept = {k: v for k, v in headers.items() if k != ATTEMPT_HEADER}
        try:
            await self._publisher.retry(
                self._names.outbound_queue,
                delay,
                message.body,
                message_id=message.message_id or "",
                attempt=attempt,
                headers=kept,
                # Jitter: a burst of failures does not come back as one burst.
                wait_ms=int(delay * random.uniform(1 - self._jitter, 1)),  # noqa: S311 - not security
            )
        except Exception as exc:
            log.error("relay_out.retry_publish_failed", bus_id=bus_id, error=type(exc).__name__)
            await asyncio.sleep(self._store_retry_s)
            await message.nack(requeue=True)
            return
        await message.ack()
        self.retried += 1
        log.warning("relay_out.retrying", bus_id=bus_id, recipient=recipient, attempt=attempt, in_ms=delay)

    async def _park(self, message: AbstractIncomingMessage, headers: dict[str, str], attempts: int) -> None:
        kept = {k: v for k, v in headers.items() if k != ATTEMPT_HEADER}
        try:
            await self._publisher.retry(
                self._names.outbound_queue,
                self._delays[0],
                message.body,
                message_id=message.message_id or "",
                attempt=attempts,
                headers=kept,
            )
        except Exception as exc:
            log.error("relay_out.park_failed", bus_id=headers.get("x-bus-id"), error=type(exc).__name__)
            await asyncio.sleep(self._store_retry_s)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def _dead(self, message: AbstractIncomingMessage, headers: dict[str, str], reason: str) -> None:
        kept = {k: v for k, v in headers.items() if k != ATTEMPT_HEADER}
        try:
            await self._publisher.dead_letter(
                message.body,
                message_id=message.message_id or "(none)",
                reason=reason,
                source_queue=self._names.outbound_queue,
                headers=kept,
            )
        except Exception as exc:  # keep it where it is; try again after a pause
            log.error("relay_out.dead_letter_failed", error=type(exc).__name__)
            await asyncio.sleep(self._store_retry_s)
            await message.nack(requeue=True)
            return
        await message.ack()
        self.dead_lettered += 1
        log.error("relay_out.dead_lettered", **_envelope_fields(headers), reason=reason)


class RelayIn:
    """Polls the national axis for this province's envelopes (documents and statuses)."""

    def __init__(
        self,
        client: NationalAxisClient,
        intake: Intake,
        publisher: Publisher,
        breaker: CircuitBreaker,
        *,
        store: RefusalStore,
        channel: AbstractChannel,
        names: BrokerNames,
        interval_s: float = 10.0,
    ) -> None:
        self._client = client
        self._intake = intake
        self._publisher = publisher
        self._breaker = breaker
        self._store = store
        self._channel = channel
        self._names = names
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._replays: tuple[AbstractQueue, str] | None = None
        # What this process decided for an axis DocId, and what it told the axis (bounded: see _forget).
        self._owed: dict[str, str] = {}
        self._told: dict[str, str] = {}
        self.polls = 0  # completed polls (tests wait for the first one)
        self.accepted = 0
        self.duplicates = 0
        self.refused = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        queue = await self._channel.declare_queue(self._names.axis_inbound_queue, passive=True)
        self._replays = (queue, await queue.consume(self._replayed))

    async def stop(self) -> None:
        if self._replays is not None:
            queue, tag = self._replays
            self._replays = None
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        await _cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        await _every(self._interval_s, self._breaker, self.poll_once, "relay_in.poll", at_once=True)

    async def poll_once(self) -> int:
        """Take in what the axis holds now; returns how many envelopes were settled with the axis.
        Each list, and each item, fails on its own: one bad item does not hold up those behind it."""
        settled = 0
        unavailable: AxisUnavailableError | None = None
        for message_type in ("edoc", "status"):
            try:
                items = await self._client.received(message_type=message_type)
            except AxisUnavailableError as exc:
                unavailable = exc
                continue
            self._breaker.success()
            for doc_id in dict.fromkeys(item.doc_id for item in items):  # a list may repeat an item
                try:
                    if await self._take(doc_id):
                        settled += 1
                except AxisUnavailableError as exc:
                    unavailable = exc
                    log.warning("relay_in.item_failed", axis_doc_id=doc_id, error=str(exc))
                except Exception as exc:  # the store, the broker, an axis refusal: next poll
                    log.error("relay_in.item_failed", axis_doc_id=doc_id, error=repr(exc))
        if len(self._owed) > 10_000:  # forget the oldest decisions; the store still has the refusals
            for old in list(self._owed)[:5_000]:
                self._owed.pop(old, None)
                self._told.pop(old, None)
        if unavailable is not None:
            raise unavailable
        self.polls += 1
        return settled

    async def _take(self, doc_id: str) -> bool:
        owed = self._owed.get(doc_id)
        if owed is not None or await self._store.has_dead_letter(_axis_message_id(doc_id)):
            # Decided before (refused and dead-lettered, or accepted after a replay) and still listed:
            # the axis is told once more what we decided (its earlier answer may have been lost), and
            # the envelope is not taken again: a refusal waits for an operator, not for a flood.
            outcome = owed or "fail"
            if self._told.get(doc_id) != outcome:
                await self._client.update_status(doc_id, outcome)
                self._told[doc_id] = outcome
            return False
        body = await self._client.get_edoc(doc_id)
        outcome = "done" if await self._accept(body, doc_id) else "fail"
        self._owed[doc_id] = outcome
        await self._client.update_status(doc_id, outcome)
        self._told[doc_id] = outcome
        return True

    async def _accept(self, body: bytes, doc_id: str) -> bool:
        """Through the intake; True when accepted (or already was), False when refused and kept in
        the dead-letter queue with the reason (a replay brings it back through the intake)."""
        try:
            accepted = await self._intake.accept_from_axis(body)
            self.accepted += 1
            log.info(
                "relay_in.accepted",
                axis_doc_id=doc_id,
                bus_id=accepted.bus_id,
                document_id=accepted.document_id,
                kind=accepted.kind,
                sender=accepted.sender,
                recipients=[str(d.addressed_to) for d in accepted.destinations],
            )
            return True
        except DuplicateEnvelopeError as exc:
            self.duplicates += 1
            log.info("relay_in.duplicate", axis_doc_id=doc_id, bus_id=exc.bus_id)
            return True
        except InputError as exc:
            self.refused += 1
            await self._publisher.dead_letter(
                body,
                message_id=_axis_message_id(doc_id),
                reason=f"from the national axis (DocId {doc_id}): {exc}",
                source_queue=self._names.axis_inbound_queue,
                headers={AXIS_DOC_HEADER: doc_id},
            )
            log.warning("relay_in.refused", axis_doc_id=doc_id, reason=str(exc))
            return False

    async def _replayed(self, message: AbstractIncomingMessage) -> None:
        """An operator replayed an envelope the intake had refused (after fixing, say, a trust
        anchor): through the intake again; if accepted now, the axis hears ``done`` after all."""
        doc_id = _text_headers(message).get(AXIS_DOC_HEADER, message.message_id or "?")
        try:
            accepted = await self._accept(message.body, doc_id)
        except Exception as exc:  # the store or the broker: leave it in the queue for later
            log.error("relay_in.replay_failed", axis_doc_id=doc_id, error=repr(exc))
            await asyncio.sleep(2.0)
            await message.nack(requeue=True)
            return
        await message.ack()
        if accepted:
            self._owed[doc_id] = "done"  # a later poll that still sees it listed says "done" again
            try:
                await self._client.update_status(doc_id, "done")
                self._told[doc_id] = "done"
            except (AxisUnavailableError, AxisRejectedError) as exc:
                log.warning("relay_in.replay_status_failed", axis_doc_id=doc_id, error=str(exc))


class ReconcileStore(Protocol):
    async def unconfirmed_axis_sends(
        self, sent_before: dt.datetime, *, limit: int = ...
    ) -> list[AxisSend]: ...
    async def axis_send_body(self, send_id: int) -> bytes | None: ...
    async def settle_axis_send(
        self,
        send_id: int,
        outcome: str | None,
        at: dt.datetime,
        event: tuple[TimelineEvent, str] | None = ...,
    ) -> None: ...


class Reconciler:
    """Checks that what the axis answered OK for is in its sent list (``getSentEdocList``); what it
    does not know is sent again from the kept copy. The only defence against an axis that answers OK
    and then loses an envelope, which no acknowledgement on our side can see."""

    def __init__(
        self,
        client: NationalAxisClient,
        store: ReconcileStore,
        publisher: Publisher,
        names: BrokerNames,
        breaker: CircuitBreaker,
        *,
        after_s: float = 300.0,
        interval_s: float = 60.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client = client
        self._store = store
        self._publisher = publisher
        self._names = names
        self._breaker = breaker
        self._after = dt.timedelta(seconds=after_s)
        self._interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.confirmed = 0
        self.resent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        await _every(self._interval_s, self._breaker, self.check_once, "reconcile.check", at_once=False)

    async def check_once(self) -> int:
        """Check the sends older than ``after_s``; returns how many were sent again."""
        now = self._clock()
        resent = 0
        for send in await self._store.unconfirmed_axis_sends(now - self._after):
            try:
                listed = await self._client.sent(
                    send.axis_doc_id, message_type="status" if send.kind == "status" else "edoc"
                )
            except AxisRejectedError:
                listed = []  # "no such DocId": the axis does not have it
            codes = {text_of(item.get("toCode")) for item in listed}
            if listed and (send.recipient in codes or codes == {""}):  # an axis without toCode: trust it
                await self._store.settle_axis_send(send.id, "confirmed", now)
                self.confirmed += 1
                continue
            body = await self._store.axis_send_body(send.id)
            if body is None:  # settled meanwhile by another process
                continue
            await self._publisher.to_queue(
                self._names.outbound_queue,
                body,
                message_id=send.message_id,
                headers={**send.headers, RESEND_HEADER: send.axis_doc_id},
            )
            detail = f"trục quốc gia không có văn bản mã {send.axis_doc_id} đã nhận: gửi lại"
            event = TimelineEvent(send.bus_id, send.recipient, DeliveryState.RETRYING, now, detail)
            await self._store.settle_axis_send(
                send.id, "lost", now, (event, f"{send.bus_id}|{send.recipient}|lost|{send.axis_doc_id}")
            )
            fields = {**_envelope_fields(send.headers), "bus_id": send.bus_id, "recipient": send.recipient}
            log.warning("reconcile.resent", **fields, axis_doc_id=send.axis_doc_id)
            resent += 1
        self.resent += resent
        return resent


async def _every(
    interval_s: float,
    breaker: CircuitBreaker,
    work: Callable[[], Awaitable[object]],
    name: str,
    *,
    at_once: bool,
) -> None:
    """Run *work* every *interval_s* (± 20 %, so that several processes do not act in step) while the
    circuit is closed. An unreachable axis counts towards the breaker; any other failure (the store,
    the broker) is logged and the next round tries again: the loop itself never dies."""
    if not at_once:
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))  # noqa: S311 - not security
    while True:
        if not breaker.is_open:
            try:
                await work()
            except AxisUnavailableError as exc:
                breaker.failure(str(exc))
                log.warning(f"{name}_failed", error=str(exc))
            except Exception as exc:
                log.error(f"{name}_error", error=repr(exc))
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))  # noqa: S311 - not security


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _axis_message_id(doc_id: str) -> str:
    return f"axis|{doc_id}"


class AxisLink:
    """Everything of one process's national-axis link, started and stopped together."""

    def __init__(
        self,
        client: NationalAxisClient,
        out: RelayOut,
        into: RelayIn,
        reconciler: Reconciler,
        breaker: CircuitBreaker,
    ):
        self.client = client
        self.out = out
        self.into = into
        self.reconciler = reconciler
        self.breaker = breaker

    async def start(self) -> None:
        await self.out.start()
        await self.into.start()
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.into.stop()
        await self.out.stop()
        await self.client.close()
