"""Writing timeline events, and moving deliveries forward with them: what every aggregate of the store
does inside its own transactions. Every write is idempotent by the event's key, so that the order "write
the status, then acknowledge the message" survives a crash between the two without loss or duplicates.
Which state may replace which is the core's rule (:func:`bus.delivery.replaceable_by`).

On PostgreSQL a batch of events, however large, is two statements of fixed text (so each is prepared
once): one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING RETURNING event_key``, which
says which events are new, and one ``UPDATE deliveries ... FROM unnest(arrays)`` that moves their
deliveries, each by its own rule. Issue 12 counted two statements per event before (insert, then
update), the largest share of the store's round trips. SQLite, the one-machine store, writes them one by
one.

Concurrent single events (:meth:`TimelineWriter.record`) share transactions and statements
(:mod:`adapters.store.group_commit`): the AMQP agencies' ``queued`` events and their
acknowledgements arrive one message at a time, many at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.audit import AuditLog, entry_fields
from adapters.store.base import utc
from adapters.store.group_commit import BatchCommit, Lane
from adapters.store.tables import deliveries, events
from bus.audit import Entry
from bus.delivery import DeliveryRow, DeliveryState, TimelineEvent, replaceable_by

__all__ = ["Plan", "TimelineWriter"]

Keyed = tuple[TimelineEvent, str]
T = TypeVar("T")
# What to write, decided from a document's deliveries as they are in the transaction that writes it:
# (what the caller gets back, the events), or None to write nothing.
Plan = Callable[[list[DeliveryRow]], tuple[T, Sequence[Keyed]] | None]


class _Planned(Generic[T]):
    __slots__ = ("bus_id", "plan")

    def __init__(self, bus_id: str, plan: Plan[T]) -> None:
        self.bus_id, self.plan = bus_id, plan


def _not_after(state: DeliveryState) -> list[str]:
    return [s.value for s in replaceable_by(state)]


def _allowed(state: DeliveryState) -> str:
    """The states *state* may replace, as the set-based update reads them: ``,queued,fetched,``."""
    return "," + ",".join(_not_after(state)) + ","


_PG_INSERT_EVENTS = text(
    "INSERT INTO events (bus_id, recipient, state, at, detail, event_key) "
    "SELECT * FROM unnest(CAST(:bus AS varchar[]), CAST(:recipient AS varchar[]), "
    "CAST(:state AS varchar[]), CAST(:at AS timestamptz[]), CAST(:detail AS text[]), "
    "CAST(:key AS varchar[])) "
    "ON CONFLICT DO NOTHING RETURNING event_key"
)

# One event per delivery in a call (see _layers); each row carries the states it may replace.
_PG_MOVE = text(
    "UPDATE deliveries AS d SET state = v.state, updated_at = v.at "
    "FROM unnest(CAST(:bus AS varchar[]), CAST(:recipient AS varchar[]), CAST(:state AS varchar[]), "
    "CAST(:at AS timestamptz[]), CAST(:allowed AS text[])) AS v(bus_id, recipient, state, at, allowed) "
    "WHERE d.bus_id = v.bus_id AND d.recipient = v.recipient "
    "AND strpos(v.allowed, ',' || d.state || ',') > 0"
)


def _layers(moving: Sequence[TimelineEvent]) -> list[list[TimelineEvent]]:
    """*moving* cut, in order, into lists with at most one event per delivery: an UPDATE ... FROM moves
    each row once, so a delivery's second event of a batch (fetched, then done) goes in a second one."""
    layers: list[list[TimelineEvent]] = []
    depth: dict[tuple[str, str | None], int] = {}
    for event in moving:
        target = (event.bus_id, event.recipient)
        index = depth.get(target, 0)
        depth[target] = index + 1
        if index == len(layers):
            layers.append([])
        layers[index].append(event)
    return layers


class TimelineWriter(AuditLog):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._set_based = engine.dialect.name == "postgresql"
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
        self._q_deliveries_of = select(deliveries).where(
            deliveries.c.bus_id.in_(bindparam("p_ids", expanding=True))
        )
        # Every write of the hot path shares the transactions of one lane (group_commit.py).
        self._lane = Lane(self._begin)
        self._records: BatchCommit[Keyed, bool] = BatchCommit(self._lane, self._record_batch)
        self._planned: BatchCommit[_Planned[Any], Any] = BatchCommit(self._lane, self._planned_batch)

    async def close(self) -> None:
        await self._lane.idle()  # the shared transactions under way finish before the engine goes
        await super().close()

    async def record_planned(self, bus_id: str, plan: Plan[T]) -> tuple[T, list[bool]] | None:
        """Read *bus_id*'s deliveries and write the events *plan* makes of them, in one transaction
        shared with concurrent calls (one read and two writes for the lot: the AMQP agencies'
        acknowledgements). *plan*'s value and, per event, whether it was added; None when *plan* said
        there is nothing to write."""
        result: tuple[T, list[bool]] | None = await self._planned.run(_Planned(bus_id, plan))
        return result

    async def _planned_batch(
        self, conn: AsyncConnection, batch: list[_Planned[Any]]
    ) -> list[tuple[Any, list[bool]] | None]:
        found: dict[str, list[DeliveryRow]] = {}
        rows = await conn.execute(self._q_deliveries_of, {"p_ids": sorted({item.bus_id for item in batch})})
        for r in rows:
            found.setdefault(r.bus_id, []).append(
                DeliveryRow(
                    r.recipient, r.route, DeliveryState(r.state), utc(r.updated_at), r.business_status
                )
            )
        plans = [item.plan(sorted(found.get(item.bus_id, []), key=lambda d: d.recipient)) for item in batch]
        keyed = [k for planned in plans if planned is not None for k in planned[1]]
        added = await self._events(conn, keyed)
        results: list[tuple[Any, list[bool]] | None] = []
        for planned in plans:
            if planned is None:
                results.append(None)
                continue
            value, mine = planned
            flags = []
            for _, key in mine:
                flags.append(key in added)
                added.discard(key)
            results.append((value, flags))
        return results

    async def record(self, event: TimelineEvent, *, key: str) -> bool:
        """Add *event* (idempotent by *key*) and move the delivery to its state; False if already there.
        Concurrent calls share a transaction."""
        return await self._records.run((event, key))

    async def _record_batch(self, conn: AsyncConnection, keyed: Sequence[Keyed]) -> list[bool]:
        added = await self._events(conn, keyed)
        results = []
        for _, key in keyed:
            results.append(key in added)
            added.discard(key)  # the same key twice in a batch: the second was there already
        return results

    async def _events(self, conn: AsyncConnection, keyed: Sequence[Keyed]) -> set[str]:
        """Write events (idempotent by key) and move their deliveries forward: the keys added."""
        unique: dict[str, TimelineEvent] = {}
        for event, key in keyed:
            unique.setdefault(key, event)
        if not unique:
            return set()
        if self._set_based:
            added = await self._insert_events(conn, unique)
        else:
            added = {key for key, event in unique.items() if await self._event(conn, event, key=key)}
        # The acceptance itself is one record of its own (documents.py), naming every recipient.
        self._audit(
            conn,
            [
                Entry(
                    f"delivery.{e.state.value}" if e.recipient is not None else f"document.{e.state.value}",
                    e.at,
                    entry_fields(
                        bus_id=e.bus_id, recipient=e.recipient, detail=e.detail, key=k, sha256=e.sha256
                    ),
                )
                for k, e in unique.items()
                if k in added and e.state is not DeliveryState.ACCEPTED
            ],
        )
        # Deliveries are created in the accepted state: only later states move them.
        moving = [
            e
            for k, e in unique.items()
            if k in added and e.recipient is not None and e.state is not DeliveryState.ACCEPTED
        ]
        for layer in _layers(moving):
            if self._set_based:
                await self._move(conn, layer)
            else:
                for event in layer:
                    await self._advance(conn, event)
        return added

    async def _insert_events(self, conn: AsyncConnection, unique: dict[str, TimelineEvent]) -> set[str]:
        found = await conn.execute(
            _PG_INSERT_EVENTS,
            {
                "bus": [e.bus_id for e in unique.values()],
                "recipient": [e.recipient for e in unique.values()],
                "state": [e.state.value for e in unique.values()],
                "at": [e.at for e in unique.values()],
                "detail": [e.detail for e in unique.values()],
                "key": list(unique),
            },
        )
        return {key for (key,) in found}

    async def _move(self, conn: AsyncConnection, layer: Sequence[TimelineEvent]) -> None:
        await conn.execute(
            _PG_MOVE,
            {
                "bus": [e.bus_id for e in layer],
                "recipient": [e.recipient for e in layer],
                "state": [e.state.value for e in layer],
                "at": [e.at for e in layer],
                "allowed": [_allowed(e.state) for e in layer],
            },
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
