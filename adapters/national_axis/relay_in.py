"""Relay in: the national axis → this province's inboxes, through the intake.

:class:`RelayIn` polls what the axis holds for this province's agencies, takes each envelope through
the intake like any other (checks, signature, duplicate suppression, local inboxes), and only then
tells the axis ``done``. A crash in between makes the axis deliver it again, which the duplicate check
absorbs. An envelope the intake refuses is kept in the dead-letter queue with the reason, and the axis
is told ``fail``; an operator's replay of it comes back through ``<prefix>.axis-inbound``.

What was decided for each listed envelope and what the axis was last told are kept in the status store
(:class:`InboundStore`), not in this process (issue 14, item 4): the gateway that takes over polling
after another died, or one that handled an operator's replay, knows them. A row nobody wrote for
``forget_after`` is deleted (an envelope still listed then is decided again: the dead letters keep its
refusal, the intake's duplicate check its acceptance).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from adapters.national_axis.breaker import CircuitBreaker, every
from adapters.national_axis.client import NationalAxisClient
from adapters.rabbitmq import (
    ACK,
    AXIS_DOC_HEADER,
    REQUEUE,
    BrokerNames,
    Publisher,
    QueueConsumer,
    cancel_task,
    text_header,
)
from bus.errors import AxisRejectedError, AxisUnavailableError, DuplicateEnvelopeError, InputError, StoreError
from bus.intake import Intake

__all__ = ["InboundStore", "RefusalStore", "RelayIn"]

log = structlog.get_logger("bus.relay")


class RefusalStore(Protocol):
    async def has_dead_letter(self, message_id: str) -> bool: ...


class InboundStore(RefusalStore, Protocol):
    """What relay in keeps in the status store (adapters/store/axis_inbound.py)."""

    async def axis_inbound(self, doc_id: str) -> tuple[str | None, str | None]:
        """(what was decided: "done", "fail" or None; what the axis was last told, or None)."""
        ...

    async def decide_axis_inbound(self, doc_id: str, outcome: str, at: dt.datetime) -> None: ...

    async def told_axis_inbound(self, doc_id: str, told: str, at: dt.datetime) -> None: ...

    async def forget_axis_inbound(self, before: dt.datetime) -> int: ...


_FORGET_EVERY_S = 3600.0  # how often the store's old rows are deleted (by the gateway that polls)


def _axis_message_id(doc_id: str) -> str:
    return f"axis|{doc_id}"


class RelayIn(QueueConsumer[None]):
    """Polls the national axis for this province's envelopes (documents and statuses)."""

    def __init__(
        self,
        client: NationalAxisClient,
        intake: Intake,
        publisher: Publisher,
        breaker: CircuitBreaker,
        *,
        store: InboundStore,
        channel: AbstractChannel,
        names: BrokerNames,
        interval_s: float = 10.0,
        forget_after: dt.timedelta = dt.timedelta(days=7),
    ) -> None:
        # Replays that cannot be taken now (the store, the broker) go back to their queue after 2 s.
        super().__init__(channel, None, name="relay_in", pause_s=2.0)
        self._client = client
        self._intake = intake
        self._publisher = publisher
        self._breaker = breaker
        self._store = store
        self._names = names
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        # What was decided for an axis DocId and what the axis was told are the store's; its rows
        # untouched for *forget_after* are deleted once an hour (monotonic time of the last).
        self._forget_after = forget_after
        self._forgot_at: float | None = None
        self.polls = 0  # completed polls (tests wait for the first one)
        self.accepted = 0
        self.duplicates = 0
        self.refused = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._subscribe(self._names.axis_inbound_queue, self._replayed)

    async def stop(self, *, drain_s: float = 0.0) -> None:
        await super().stop(drain_s=drain_s)
        await cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        await every(self._interval_s, self._breaker, self.poll_once, "relay_in.poll", at_once=True)

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
        await self._forget_old()
        if unavailable is not None:
            raise unavailable
        self.polls += 1
        return settled

    async def _forget_old(self) -> None:
        now = time.monotonic()
        if self._forgot_at is not None and now - self._forgot_at < _FORGET_EVERY_S:
            return
        self._forgot_at = now
        try:
            forgotten = await self._store.forget_axis_inbound(_now() - self._forget_after)
        except StoreError as exc:  # the next hour tries again
            log.warning("relay_in.forget_failed", error=str(exc))
            return
        if forgotten:
            log.info("relay_in.forgotten", rows=forgotten)

    async def _take(self, doc_id: str) -> bool:
        owed, told = await self._store.axis_inbound(doc_id)
        if owed is not None or await self._store.has_dead_letter(_axis_message_id(doc_id)):
            # Decided before (refused and dead-lettered, or accepted after a replay) and still listed:
            # the axis is told once more what we decided (its earlier answer may have been lost), and
            # the envelope is not taken again: a refusal waits for an operator, not for a flood.
            outcome = owed or "fail"
            if told != outcome:
                await self._client.update_status(doc_id, outcome)
                await self._store.told_axis_inbound(doc_id, outcome, _now())
            return False
        body = await self._client.get_edoc(doc_id)
        outcome = "done" if await self._accept(body, doc_id) else "fail"
        await self._store.decide_axis_inbound(doc_id, outcome, _now())
        await self._client.update_status(doc_id, outcome)
        await self._store.told_axis_inbound(doc_id, outcome, _now())
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
        queue = self._names.axis_inbound_queue
        doc_id = text_header(message.headers or {}, AXIS_DOC_HEADER) or message.message_id or "?"
        try:
            accepted = await self._accept(message.body, doc_id)
            if accepted:
                # Before the ack: a later poll that still sees it listed, on whichever gateway, says
                # "done" again (not "fail" for its dead letter).
                await self._store.decide_axis_inbound(doc_id, "done", _now())
        except Exception as exc:  # the store or the broker: leave it in the queue for later
            log.error("relay_in.replay_failed", axis_doc_id=doc_id, error=repr(exc))
            await self.settle(message, REQUEUE, queue=queue)
            return
        await self.settle(message, ACK, queue=queue)
        if accepted:
            try:
                await self._client.update_status(doc_id, "done")
                await self._store.told_axis_inbound(doc_id, "done", _now())
            except (AxisUnavailableError, AxisRejectedError, StoreError) as exc:
                log.warning("relay_in.replay_status_failed", axis_doc_id=doc_id, error=str(exc))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
