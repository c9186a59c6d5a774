"""The AMQP agencies' acknowledgements: ``<prefix>.agency-acks`` → the documents' timelines.

An agency acknowledges an envelope it took from its delivery queue with a message
``{"bus_id": "...", "state": "processing" | "done" | "fail", "reason": "..."}`` from its broker user.
The rules are the HTTP API's (:mod:`bus.access`): the same states, a ``fail`` needs a reason, at most
``max_reason_chars``; forward only, ``done`` and ``fail`` final, the same one again a harmless repeat.
Only the envelope's recipient may acknowledge it, and only once the bus has put it in its queue; for
anyone else it does not exist (``not-found``, as over HTTP).

The first acknowledgement of an envelope is also its ``fetched`` event: the agency's system has it.
AMQP agencies have no rows in the HTTP inbox, so the acknowledgement is written on the delivery and
its timeline (:meth:`record`, idempotent by key), and finality rests on one event key for both final
states (``<bus id>|<recipient>|ack|final``): the first ``done`` or ``fail`` written wins, atomically,
and a later one is compared with it. The message is acknowledged to RabbitMQ after the writes; while
the store is down the message is held and the write tried again. The answer goes back by a reply
(``{"status": 200, ...}`` or the HTTP API's refusal) when the message has a direct ``reply_to``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.rabbitmq.agency_replies import (
    INTERNAL,
    Refusal,
    RefusalOf,
    ReplyPort,
    answer_then_ack,
    sender_of,
)
from adapters.rabbitmq.consumer import QueueConsumer
from adapters.rabbitmq.names import BrokerNames
from bus.access import ACKNOWLEDGEMENT_FORM, Acknowledgement, acknowledgement, confirm_acknowledged
from bus.delivery import DeliveryRow, DeliveryState, TimelineEvent
from bus.errors import AlreadyFinalError, BadAcknowledgementError, InputError, StoreError
from bus.topology import Agency

__all__ = ["MAX_ACK_BYTES", "AckStorePort", "AgencyAcks", "read_acknowledgement"]

log = structlog.get_logger("bus.agency")

T = TypeVar("T")
MAX_ACK_BYTES = 64 * 1024  # as any body but an envelope over HTTP
MAX_STORE_DELAY_S = 30.0
_BUS_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The states in which the envelope is in the agency's queue or past it: what it may acknowledge.
_DELIVERED = frozenset(
    {
        DeliveryState.QUEUED,
        DeliveryState.FETCHED,
        DeliveryState.STATUS,
        DeliveryState.PROCESSING,
        DeliveryState.DONE,
        DeliveryState.FAIL,
    }
)
_FINAL = frozenset({DeliveryState.DONE, DeliveryState.FAIL})


Keyed = tuple[TimelineEvent, str]


class AckStorePort(Protocol):
    async def deliveries(self, bus_id: str) -> list[DeliveryRow]: ...
    async def record_planned(
        self, bus_id: str, plan: Callable[[list[DeliveryRow]], tuple[T, Sequence[Keyed]] | None]
    ) -> tuple[T, list[bool]] | None: ...


def read_acknowledgement(body: bytes, *, max_reason_chars: int) -> tuple[str, Acknowledgement]:
    """The bus id and the acknowledgement of an acknowledgement message, or
    :class:`~bus.errors.BadAcknowledgementError` saying what is wrong with it."""
    if len(body) > MAX_ACK_BYTES:
        raise BadAcknowledgementError(f"the message has {len(body)} bytes; at most {MAX_ACK_BYTES}")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise BadAcknowledgementError(f'not JSON: {ACKNOWLEDGEMENT_FORM[:-1]}, "bus_id": "..."}}') from None
    if not isinstance(payload, dict):
        raise BadAcknowledgementError(f'not a JSON object: {ACKNOWLEDGEMENT_FORM[:-1]}, "bus_id": "..."}}')
    bus_id = payload.get("bus_id")
    if not isinstance(bus_id, str) or not _BUS_ID.fullmatch(bus_id):
        raise BadAcknowledgementError(
            "bus_id must be the bus id of an envelope you received (its x-bus-id header)"
        )
    return bus_id, acknowledgement(
        payload.get("state"), payload.get("reason"), max_reason_chars=max_reason_chars
    )


def _confirm(bus_id: str, ack: Acknowledgement, recorded: str | None) -> None:
    """:func:`bus.access.confirm_acknowledged`, naming the envelope by its bus id (there is no inbox id)."""
    try:
        confirm_acknowledged(0, ack, recorded)
    except AlreadyFinalError:
        raise AlreadyFinalError(f"envelope {bus_id} was already acknowledged as {recorded}") from None


class AgencyAcks(QueueConsumer[None]):
    def __init__(
        self,
        channel: AbstractChannel,
        names: BrokerNames,
        users: Mapping[str, Agency],
        store: AckStorePort,
        replies: ReplyPort,
        refusal_of: RefusalOf,
        *,
        max_reason_chars: int,
        store_retry_s: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(channel, None, name="agency_acks", pause_s=store_retry_s)
        self._queue = names.agency_acks
        self._users = users
        self._store = store
        self._replies = replies
        self._refusal_of = refusal_of
        self._max_reason_chars = max_reason_chars
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._inflight: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self._subscribe(self._queue, self._handle)
        log.info("agency_acks.consuming", queue=self._queue)

    async def stop(self, *, drain_s: float = 5.0) -> None:
        await self._pause()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=drain_s)
        await super().stop(drain_s=0)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            answer = await self.answer(message)
            await answer_then_ack(self._replies, message, answer, self._ack)
        finally:
            self._inflight.discard(task)

    async def answer(self, message: AbstractIncomingMessage) -> dict[str, Any]:
        """The acknowledgement in *message* applied (or refused), as the reply's body."""
        agency = sender_of(message.user_id, self._users)
        if isinstance(agency, Refusal):
            return self._refused(agency, message, None)
        try:
            bus_id, ack = read_acknowledgement(message.body, max_reason_chars=self._max_reason_chars)
            applied = await self._holding(lambda: self.apply(agency, bus_id, ack))
        except InputError as exc:
            return self._refused(self._refusal_of(exc) or INTERNAL, message, agency)
        if isinstance(applied, Refusal):
            return self._refused(applied, message, agency)
        return applied

    async def apply(self, agency: Agency, bus_id: str, ack: Acknowledgement) -> dict[str, Any] | Refusal:
        """Write *agency*'s acknowledgement *ack* of envelope *bus_id* (idempotent: safe to repeat)."""
        codes = {str(agency.organ_id), *(str(alias) for alias in agency.aliases)}
        now = self._clock()

        def plan(rows: list[DeliveryRow]) -> tuple[DeliveryRow, Sequence[Keyed]] | None:
            """Read and written in one transaction, shared with other messages'."""
            row = _delivery(rows, codes)
            if row is None:
                return None
            if ack.state is DeliveryState.PROCESSING and row.state in _FINAL:
                return row, ()  # refused below: nothing to write
            mine = f"{bus_id}|{row.recipient}"  # the delivery's message id: its events' keys start with it
            # The keys of the inbox store's events (adapters/store/inbox.py), so each is written once.
            final = "processing" if ack.state is DeliveryState.PROCESSING else "final"
            return row, [
                (TimelineEvent(bus_id, row.recipient, DeliveryState.FETCHED, now), f"{mine}|fetched"),
                (TimelineEvent(bus_id, row.recipient, ack.state, now, ack.reason), f"{mine}|ack|{final}"),
            ]

        written = await self._store.record_planned(bus_id, plan)
        if written is None:
            return Refusal(404, "not-found", f"no envelope {bus_id} delivered to {agency.organ_id}")
        row, added = written
        if ack.state is DeliveryState.PROCESSING:
            if row.state in _FINAL:
                _confirm(bus_id, ack, row.state.value)
        elif not added[1]:
            after = _delivery(await self._store.deliveries(bus_id), codes)
            _confirm(bus_id, ack, after.state.value if after is not None else None)
        log.info(
            "agency_acks.acknowledged",
            bus_id=bus_id,
            recipient=row.recipient,
            agency=str(agency.organ_id),
            state=ack.state.value,
        )
        return {"status": 200, "bus_id": bus_id, "recipient": row.recipient, "state": ack.state.value}

    async def _holding(self, write: Callable[[], Awaitable[T]]) -> T:
        """*write()*'s result; while the store fails, the message is held and the write tried again
        (doubling from ``store_retry_s`` up to 30 s). Any other error is the caller's."""
        delay = self._store_retry_s
        while True:
            try:
                return await write()
            except StoreError as exc:
                log.error("agency_acks.store_failed", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_STORE_DELAY_S)

    def _refused(
        self, refusal: Refusal, message: AbstractIncomingMessage, agency: Agency | None
    ) -> dict[str, Any]:
        log.info(
            "agency_acks.refused",
            code=refusal.code,
            status=refusal.status,
            **({"agency": str(agency.organ_id)} if agency else {"user_id": (message.user_id or "")[:64]}),
            message=refusal.message[:500],
        )
        return refusal.answer()


def _delivery(rows: list[DeliveryRow], codes: set[str]) -> DeliveryRow | None:
    """The delivery of a document to the agency known by *codes*, once it has reached its queue."""
    return next((r for r in rows if r.recipient in codes and r.state in _DELIVERED), None)
