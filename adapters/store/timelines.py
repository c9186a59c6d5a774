"""Writing timeline events, and moving deliveries forward with them: what every aggregate of the store
does inside its own transactions. Every write is idempotent by the event's key, so that the order "write
the status, then acknowledge the message" survives a crash between the two without loss or duplicates.
Which state may replace which is the core's rule (:func:`bus.delivery.replaceable_by`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.base import StoreBase
from adapters.store.tables import deliveries, events
from bus.delivery import DeliveryState, TimelineEvent, replaceable_by

__all__ = ["TimelineWriter"]


def _not_after(state: DeliveryState) -> list[str]:
    return [s.value for s in replaceable_by(state)]


class TimelineWriter(StoreBase):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        # Hot-path statements are built once: SQLAlchemy then reuses their compiled form without
        # rebuilding the statement and its cache key on every call (a large share of the CPU a
        # request costs, measured with bench/bench_e2e.py).
        self._ins_events = self._insert_ignoring_duplicates(events)
        self._q_advance = (
            update(deliveries)
            .where(
                deliveries.c.bus_id == bindparam("p_bus"),
                deliveries.c.recipient == bindparam("p_recipient"),
                deliveries.c.state.in_(bindparam("p_states", expanding=True)),
            )
            .values(state=bindparam("p_state"), updated_at=bindparam("p_at"))
        )
        self._q_event_keys = select(events.c.event_key).where(
            events.c.event_key.in_(bindparam("p_keys", expanding=True))
        )

    async def _advance(self, conn: AsyncConnection, event: TimelineEvent) -> None:
        await conn.execute(
            self._q_advance,
            {
                "p_bus": event.bus_id,
                "p_recipient": event.recipient,
                "p_states": _not_after(event.state),
                "p_state": event.state.value,
                "p_at": event.at,
            },
        )

    async def _events(self, conn: AsyncConnection, keyed: Sequence[tuple[TimelineEvent, str]]) -> None:
        """Write events (idempotent by key) and move their deliveries forward, few statements for many."""
        if not keyed:
            return
        if len(keyed) == 1:
            event, key = keyed[0]
            added = await self._event(conn, event, key=key)
            # Deliveries are created in the accepted state: only later states move them.
            if added and event.recipient is not None and event.state is not DeliveryState.ACCEPTED:
                await self._advance(conn, event)
            return
        keys = [key for _, key in keyed]
        already = {k for (k,) in await conn.execute(self._q_event_keys, {"p_keys": keys})}
        new = [(e, k) for e, k in keyed if k not in already]
        if not new:
            return
        await conn.execute(
            self._ins_events,
            [
                {
                    "bus_id": e.bus_id,
                    "recipient": e.recipient,
                    "state": e.state.value,
                    "at": e.at,
                    "detail": e.detail,
                    "event_key": k,
                }
                for e, k in new
            ],
        )
        groups: dict[tuple[DeliveryState, dt.datetime], list[tuple[str, str]]] = {}
        for event, _ in new:
            if event.recipient is not None and event.state is not DeliveryState.ACCEPTED:
                groups.setdefault((event.state, event.at), []).append((event.bus_id, event.recipient))
        for (state, at), pairs in groups.items():
            await conn.execute(
                update(deliveries)
                .where(
                    tuple_(deliveries.c.bus_id, deliveries.c.recipient).in_(pairs),
                    deliveries.c.state.in_(_not_after(state)),
                )
                .values(state=state.value, updated_at=at)
            )

    async def _event(self, conn: AsyncConnection, event: TimelineEvent, *, key: str) -> bool:
        result = await conn.execute(
            self._ins_events,
            {
                "bus_id": event.bus_id,
                "recipient": event.recipient,
                "state": event.state.value,
                "at": event.at,
                "detail": event.detail,
                "event_key": key,
            },
        )
        return bool(result.rowcount)
