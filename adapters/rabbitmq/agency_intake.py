"""The agency intake: envelopes the AMQP agencies publish → :meth:`bus.intake.Intake.accept`.

For each message of ``<prefix>.agency-intake``: the sender is the agency whose broker user published it
(:func:`~adapters.rabbitmq.agency_replies.sender_of`), the envelope goes through the same intake as
``POST /v1/envelopes``, and the answer goes back by a reply: ``{"status": 202, "bus_id": ...,
"document_id": ..., "recipients": [...]}``, or the HTTP API's refusal (``{"status": 409, "error":
{"code": "duplicate", ...}}``). The message is acknowledged only after the intake returned, that is
after RabbitMQ confirmed every delivery and the store recorded the acceptance, and after the reply.

A node that dies before the acknowledgement has the broker deliver the message again: the intake
publishes the deliveries again under the same message ids (their consumers absorb repeats), or, when the
first attempt had finished, finds a duplicate; a redelivered message whose envelope is byte for byte
the one accepted is answered as accepted, since its sender sent it once.

Temporary failures (broker, store, revocation lists) are answered as the HTTP API answers them, 503
"NOT accepted: send it again": the agency, not a queue of the bus, holds what was not accepted, as over
HTTP. A failure nobody foresaw is answered 500 and logged with its traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

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
from bus.delivery import AcceptedDocument, DeliveryRow
from bus.errors import DuplicateEnvelopeError, StoreError
from bus.intake import Accepted
from bus.organ_id import OrganId
from bus.receipts import Notary, acceptance_receipt
from bus.topology import Agency

__all__ = ["OUTCOME_UNKNOWN", "AgencyIntake", "IntakePort", "IntakeRecordsPort", "accepted_answer"]

log = structlog.get_logger("bus.agency")

# As the HTTP API's answer to a store failure during intake (adapters/http/envelopes.py).
OUTCOME_UNKNOWN = Refusal(
    503,
    "outcome-unknown",
    "the envelope was NOT accepted, though some recipients may have it: send the SAME "
    "envelope again (a repeat is absorbed, never delivered twice)",
)


class IntakePort(Protocol):
    async def accept(self, body: bytes, *, sender: OrganId) -> Accepted: ...


class IntakeRecordsPort(Protocol):
    """What the intake consumer reads of an earlier acceptance (the store)."""

    async def document(self, bus_id: str) -> AcceptedDocument | None: ...
    async def deliveries(self, bus_id: str) -> list[DeliveryRow]: ...


def accepted_answer(accepted: Accepted, notary: Notary | None = None) -> dict[str, Any]:
    """The reply to an accepted envelope: the HTTP API's 202 body (its receipt too), with its status."""
    receipt = None if notary is None else acceptance_receipt(notary, accepted)
    return ({} if receipt is None else {"receipt": receipt}) | {
        "status": 202,
        "bus_id": accepted.bus_id,
        "document_id": accepted.document_id,
        "recipients": [
            {"organ_id": str(d.addressed_to), "route": d.kind.value} for d in accepted.destinations
        ],
    }


class AgencyIntake(QueueConsumer[None]):
    def __init__(
        self,
        channel: AbstractChannel,
        names: BrokerNames,
        users: Mapping[str, Agency],
        intake: IntakePort,
        records: IntakeRecordsPort,
        replies: ReplyPort,
        refusal_of: RefusalOf,
        *,
        notary: Notary | None = None,
    ) -> None:
        super().__init__(channel, None, name="agency_intake", pause_s=1.0)
        self._notary = notary
        self._queue = names.agency_intake
        self._users = users
        self._intake = intake
        self._records = records
        self._replies = replies
        self._refusal_of = refusal_of
        self._inflight: set[asyncio.Task[Any]] = set()
        self.accepted = 0  # envelopes this process accepted (tests, bench)
        self.refused = 0

    async def start(self) -> None:
        await self._subscribe(self._queue, self._handle)
        log.info("agency_intake.consuming", queue=self._queue)

    async def stop(self, *, drain_s: float = 5.0) -> None:
        """No new envelopes; those in the intake finish (for up to *drain_s*) before the channel goes."""
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
        """What the intake made of *message*, as the reply's body; every durable step is done when it
        returns."""
        sender = sender_of(message.user_id, self._users)
        if isinstance(sender, Refusal):
            return self._refused(sender, message, None)
        try:
            accepted = await self._intake.accept(message.body, sender=sender.organ_id)
        except DuplicateEnvelopeError as exc:
            repeat = await self._same_as_accepted(exc.bus_id, message) if message.redelivered else None
            if repeat is not None:
                log.info("agency_intake.repeat", bus_id=exc.bus_id, sender=str(sender.organ_id))
                return repeat
            return self._refused(self._refusal(exc), message, sender)
        except Exception as exc:
            return self._refused(self._refusal(exc), message, sender)
        self.accepted += 1
        log.info(
            "agency_intake.accepted",
            bus_id=accepted.bus_id,
            document_id=accepted.document_id,
            kind=accepted.kind,
            sender=accepted.sender,
            recipients=[str(d.addressed_to) for d in accepted.destinations],
        )
        return accepted_answer(accepted, self._notary)

    def _refusal(self, exc: Exception) -> Refusal:
        """The HTTP API's answer to what the intake raised (as ``POST /v1/envelopes`` gives it)."""
        if isinstance(exc, StoreError):  # perhaps after some deliveries were published
            log.error("agency_intake.store_unavailable", error=type(exc).__name__)
            return OUTCOME_UNKNOWN
        refusal = self._refusal_of(exc)
        if refusal is None:
            log.exception("agency_intake.internal_error", exc_info=exc)
            return INTERNAL
        if refusal.status >= 500:
            log.error("agency_intake.unavailable", code=refusal.code, error=str(exc)[:500])
        return refusal

    def _refused(
        self, refusal: Refusal, message: AbstractIncomingMessage, sender: Agency | None
    ) -> dict[str, Any]:
        self.refused += 1
        log.info(
            "agency_intake.refused",
            code=refusal.code,
            status=refusal.status,
            **({"sender": str(sender.organ_id)} if sender else {"user_id": (message.user_id or "")[:64]}),
            **({"bus_id": str(refusal.extra["bus_id"])} if "bus_id" in refusal.extra else {}),
            message=refusal.message[:500],
        )
        return refusal.answer()

    async def _same_as_accepted(self, bus_id: str, message: AbstractIncomingMessage) -> dict[str, Any] | None:
        """The answer to a redelivered message that this axis accepted already (its first handling
        ended before the acknowledgement): the same bytes, so the same acceptance. None otherwise."""
        try:
            document = await self._records.document(bus_id)
            if document is None or document.envelope_sha256 != hashlib.sha256(message.body).hexdigest():
                return None
            deliveries = await self._records.deliveries(bus_id)
        except StoreError:
            return None  # then it is answered as the duplicate it is, with its bus id
        self.accepted += 1
        return {
            "status": 202,
            "bus_id": bus_id,
            "document_id": document.document_id,
            "recipients": [{"organ_id": d.recipient, "route": d.route} for d in deliveries],
        }
