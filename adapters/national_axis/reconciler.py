"""The reconciler: the only defence against a national axis that answers OK and then loses an envelope,
which no acknowledgement on our side can see. What the axis took is checked against its sent list
(``getSentEdocList``); what it does not know is sent again from the copy kept at the send.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Protocol

import structlog

from adapters.national_axis.breaker import CircuitBreaker, every
from adapters.national_axis.client import NationalAxisClient, text_of
from adapters.rabbitmq import RESEND_HEADER, BrokerNames, Publisher, cancel_task, known_fields
from bus.delivery import AxisSend, DeliveryState, TimelineEvent
from bus.errors import AxisRejectedError

__all__ = ["ReconcileStore", "Reconciler"]

log = structlog.get_logger("bus.relay")


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
        await cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        await every(self._interval_s, self._breaker, self.check_once, "reconcile.check", at_once=False)

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
            # Empty for a copy that named its envelope in the body store: its headers carry the
            # reference again, and the relay reads the envelope from there (issue 12).
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
            fields = {**known_fields(send.headers), "bus_id": send.bus_id, "recipient": send.recipient}
            log.warning("reconcile.resent", **fields, axis_doc_id=send.axis_doc_id)
            resent += 1
        self.resent += resent
        return resent
