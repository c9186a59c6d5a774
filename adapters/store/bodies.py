"""The body store: every envelope the bus delivers, stored once, content-addressed, in chunks.

A body is the bus-signed envelope, the same bytes for every recipient, named by their SHA-256. It is
written by the intake before any copy referring to it is published (large envelopes, wide fan-outs),
or by the inbox worker in the transaction that keeps the copies it carried (small ones); the inbox,
the dead letters and what the national axis took name it. Its bytes are rows of at most
:data:`CHUNK` bytes, written from a file and read back one at a time, so that no 100 MB envelope is
ever whole in the bus's memory on its way in or out. Why in the status database, and when a body
may go: docs/data-path.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import IO

from sqlalchemy import Exists, bindparam, delete, exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.audit import AuditLog
from adapters.store.tables import axis_sends, bodies, body_chunks, body_refs, dead_letters, deliveries, inbox
from bus.audit import Entry
from bus.delivery import DeliveryState
from bus.errors import StoreError
from bus.headers import BodyRef

__all__ = ["CHUNK", "FINAL_STATES", "Bodies"]

CHUNK = 1024 * 1024

# PostgreSQL: the inbox worker's bodies, a batch at a time (see Bodies._keep_small).
_PG_TOUCH = text(
    "UPDATE bodies SET stored_at = :at WHERE sha256 = ANY(CAST(:sha AS varchar[])) RETURNING sha256"
)
_PG_INSERT_CHUNKS = text(
    "INSERT INTO body_chunks (sha256, seq, data) SELECT * FROM unnest(CAST(:sha AS varchar[]), "
    "CAST(:seq AS integer[]), CAST(:data AS bytea[])) ON CONFLICT DO NOTHING"
)
_PG_INSERT_BODIES = text(
    "INSERT INTO bodies (sha256, size, chunks, stored_at) "
    "SELECT s, z, c, CAST(:at AS timestamptz) FROM unnest(CAST(:sha AS varchar[]), "
    "CAST(:size AS bigint[]), CAST(:chunks AS integer[])) AS v(s, z, c) "
    "ON CONFLICT DO NOTHING"
)
_PG_INSERT_REFS = text(
    "INSERT INTO body_refs (sha256, bus_id) SELECT * FROM unnest(CAST(:sha AS varchar[]), "
    "CAST(:bus AS varchar[])) ON CONFLICT DO NOTHING"
)
# A delivery in one of these states needs its body no more: acknowledged done or fail by its recipient,
# given up (failed, dead-lettered: the dead letter itself keeps the body until it is replayed), or taken
# by the national axis (whose send keeps the body until the axis lists it).
FINAL_STATES = (
    DeliveryState.DONE.value,
    DeliveryState.FAIL.value,
    DeliveryState.FAILED.value,
    DeliveryState.DEAD_LETTERED.value,
    DeliveryState.SENT_TO_AXIS.value,
)
_GC_LOCK = 4242018  # PostgreSQL advisory lock: one collector at a time across the gateways


def _holds(cutoff: dt.datetime) -> list[Exists]:
    """Conditions under which a body is still needed (any one keeps it), for ``bodies.c.sha256``."""
    sha = bodies.c.sha256
    mine = body_refs.c.sha256 == sha
    delivery_open = (
        select(1)
        .select_from(body_refs.join(deliveries, deliveries.c.bus_id == body_refs.c.bus_id))
        .where(mine, or_(deliveries.c.state.not_in(FINAL_STATES), deliveries.c.updated_at >= cutoff))
    )
    inbox_open = select(1).where(
        inbox.c.body_sha256 == sha,
        or_(
            inbox.c.ack_state.is_(None),
            inbox.c.ack_state == DeliveryState.PROCESSING.value,
            inbox.c.acked_at >= cutoff,
        ),
    )
    axis_open = (
        select(1)
        .select_from(body_refs.join(axis_sends, axis_sends.c.bus_id == body_refs.c.bus_id))
        .where(mine, or_(axis_sends.c.outcome.is_(None), axis_sends.c.checked_at >= cutoff))
    )
    dead_open = (
        select(1)
        .select_from(body_refs.join(dead_letters, dead_letters.c.bus_id == body_refs.c.bus_id))
        .where(mine, or_(dead_letters.c.replayed_at.is_(None), dead_letters.c.replayed_at >= cutoff))
    )
    return [exists(q) for q in (delivery_open, inbox_open, axis_open, dead_open)]


class Bodies(AuditLog):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        ins = self._insert_ignoring_duplicates
        self._ins_body, self._ins_chunk, self._ins_ref = ins(bodies), ins(body_chunks), ins(body_refs)
        # Storing a body again moves its stored_at: the collector, which deletes only what was stored
        # before its cutoff, then leaves it (row lock on PostgreSQL; SQLite has one writer).
        self._q_touch = (
            update(bodies).where(bodies.c.sha256 == bindparam("p_sha")).values(stored_at=bindparam("p_at"))
        )
        self._q_head = select(bodies.c.size, bodies.c.chunks).where(bodies.c.sha256 == bindparam("p_sha"))
        # The head and, for a body of one chunk (any envelope up to 1 MiB), that chunk: one read.
        self._q_head_first = (
            select(bodies.c.size, bodies.c.chunks, body_chunks.c.data)
            .select_from(
                bodies.outerjoin(
                    body_chunks,
                    (body_chunks.c.sha256 == bodies.c.sha256)
                    & (body_chunks.c.seq == 0)
                    & (bodies.c.chunks == 1),
                )
            )
            .where(bodies.c.sha256 == bindparam("p_sha"))
        )
        self._q_chunk = select(body_chunks.c.data).where(
            body_chunks.c.sha256 == bindparam("p_sha"), body_chunks.c.seq == bindparam("p_seq")
        )

    async def put_body(
        self, ref: BodyRef, source: IO[bytes], *, bus_id: str, at: dt.datetime | None = None
    ) -> None:
        """Keep the *ref.size* bytes of *source* (from its start) as body *ref.sha256* of document
        *bus_id*, in one transaction, a chunk at a time, stored *at* (now). Idempotent: a body stored
        already is kept (and counts as stored now)."""
        now = at or dt.datetime.now(dt.UTC)
        async with self._begin() as conn:
            if not await self._touched(conn, ref.sha256, now):
                source.seek(0)
                size, seq = 0, 0
                while piece := source.read(CHUNK):
                    await conn.execute(self._ins_chunk, {"sha256": ref.sha256, "seq": seq, "data": piece})
                    size, seq = size + len(piece), seq + 1
                if size != ref.size:
                    raise StoreError(f"body {ref.sha256} has {size} bytes, not the {ref.size} announced")
                await conn.execute(
                    self._ins_body, {"sha256": ref.sha256, "size": size, "chunks": seq, "stored_at": now}
                )
            await conn.execute(self._ins_ref, {"sha256": ref.sha256, "bus_id": bus_id})

    async def _touched(self, conn: AsyncConnection, sha256: str, now: dt.datetime) -> bool:
        return bool((await conn.execute(self._q_touch, {"p_sha": sha256, "p_at": now})).rowcount)

    async def _keep_small(
        self, conn: AsyncConnection, items: Iterable[tuple[str, bytes, str]], now: dt.datetime
    ) -> None:
        """Bodies a copy carried (``(sha256, bytes, bus id)``; small): for the inbox worker's transaction.
        On PostgreSQL four statements of fixed text for the lot, in the order that keeps a body's row
        the mark of a whole body: its retention renewed where it is, its chunks, its row, its holders."""
        if self._engine.dialect.name == "postgresql":
            await self._keep_small_set_based(conn, list(items), now)
            return
        written: set[str] = set()
        for sha256, data, bus_id in items:
            if sha256 not in written and not await self._touched(conn, sha256, now):
                pieces = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)] or [b""]
                await conn.execute(
                    self._ins_chunk,
                    [{"sha256": sha256, "seq": seq, "data": piece} for seq, piece in enumerate(pieces)],
                )
                await conn.execute(
                    self._ins_body,
                    {"sha256": sha256, "size": len(data), "chunks": len(pieces), "stored_at": now},
                )
            written.add(sha256)
            await conn.execute(self._ins_ref, {"sha256": sha256, "bus_id": bus_id})

    async def _keep_small_set_based(
        self, conn: AsyncConnection, items: list[tuple[str, bytes, str]], now: dt.datetime
    ) -> None:
        if not items:
            return
        # In the order of their digests: two gateways writing the same bodies lock their rows in the
        # same order, never in crossed ones (a deadlock seen when they did not).
        carried = {sha256: data for sha256, data, _ in sorted(items, key=lambda i: i[0])}
        there = await conn.execute(_PG_TOUCH, {"sha": list(carried), "at": now})
        for (sha256,) in there:
            carried.pop(sha256, None)
        if carried:
            chunks = [
                (sha256, seq, data[at : at + CHUNK])
                for sha256, data in carried.items()
                for seq, at in enumerate(range(0, max(len(data), 1), CHUNK))
            ]
            await conn.execute(
                _PG_INSERT_CHUNKS,
                {
                    "sha": [c[0] for c in chunks],
                    "seq": [c[1] for c in chunks],
                    "data": [c[2] for c in chunks],
                },
            )
            await conn.execute(
                _PG_INSERT_BODIES,
                {
                    "sha": list(carried),
                    "size": [len(data) for data in carried.values()],
                    "chunks": [max(1, -(-len(data) // CHUNK)) for data in carried.values()],
                    "at": now,
                },
            )
        refs = sorted({(sha256, bus_id) for sha256, _, bus_id in items})
        await conn.execute(_PG_INSERT_REFS, {"sha": [r[0] for r in refs], "bus": [r[1] for r in refs]})

    async def body_size(self, sha256: str) -> int | None:
        """The size of body *sha256*, or None when the store has none (never had, or collected)."""
        async with self._connect() as conn:
            row = (await conn.execute(self._q_head, {"p_sha": sha256})).first()
        return None if row is None else int(row.size)

    async def body_head(self, sha256: str) -> tuple[int, bytes | None] | None:
        """The size of body *sha256* and, when it is one chunk, the body itself (one read); None when
        the store has none. A larger body is read with :meth:`body_chunks`."""
        async with self._connect() as conn:
            row = (await conn.execute(self._q_head_first, {"p_sha": sha256})).first()
        if row is None:
            return None
        return int(row.size), (None if row.data is None else bytes(row.data))

    async def body_chunks(self, sha256: str) -> AsyncIterator[bytes]:
        """Body *sha256*, a chunk at a time, each read on a connection of its own (a slow reader holds
        none); :class:`~bus.errors.StoreError` when it is not (or no longer) there whole."""
        async with self._connect() as conn:
            row = (await conn.execute(self._q_head, {"p_sha": sha256})).first()
        if row is None:
            raise StoreError(f"body {sha256} is not in the body store")
        for seq in range(int(row.chunks)):
            async with self._connect() as conn:
                data = (await conn.execute(self._q_chunk, {"p_sha": sha256, "p_seq": seq})).scalar()
            if data is None:
                raise StoreError(f"body {sha256} lost its chunk {seq} while it was read")
            yield bytes(data)

    async def read_body(self, sha256: str) -> bytes | None:
        """Body *sha256* whole (the national axis's sendEdoc takes one string), or None."""
        head = await self.body_head(sha256)
        if head is None:
            return None
        if head[1] is not None:
            return head[1]
        return b"".join([chunk async for chunk in self.body_chunks(sha256)])

    async def missing_bodies(self, shas: Sequence[str]) -> set[str]:
        """Which of *shas* the body store does not have."""
        if not shas:
            return set()
        async with self._connect() as conn:
            found = await conn.execute(select(bodies.c.sha256).where(bodies.c.sha256.in_(sorted(set(shas)))))
            return set(shas) - {sha for (sha,) in found}

    async def collect_bodies(self, now: dt.datetime, *, retention: dt.timedelta, limit: int = 100) -> int:
        """Delete up to *limit* bodies that nothing holds any more, each stored, and released by every
        delivery, inbox entry, axis send and dead letter that names it, more than *retention* before
        *now*; returns how many. A body still needed is never deleted (docs/data-path.md)."""
        cutoff = now - retention
        candidates = (
            select(bodies.c.sha256)
            .where(bodies.c.stored_at < cutoff, *[~held for held in _holds(cutoff)])
            .order_by(bodies.c.stored_at)
            .limit(limit)
        )
        async with self._begin() as conn:
            if self._engine.dialect.name == "postgresql":
                locked = await conn.execute(text(f"SELECT pg_try_advisory_xact_lock({_GC_LOCK})"))
                if not locked.scalar():
                    return 0  # another gateway collects now
            shas = [sha for (sha,) in await conn.execute(candidates)]
            if not shas:
                return 0
            # Stored again since the look-up (put_body moved stored_at): not this time.
            gone = await conn.execute(
                delete(bodies)
                .where(bodies.c.sha256.in_(shas), bodies.c.stored_at < cutoff)
                .returning(bodies.c.sha256)
            )
            deleted = [sha for (sha,) in gone]
            if deleted:
                await conn.execute(delete(body_chunks).where(body_chunks.c.sha256.in_(deleted)))
                await conn.execute(delete(body_refs).where(body_refs.c.sha256.in_(deleted)))
                self._audit(conn, [Entry("bodies.collected", now, {"sha256": sorted(deleted)})])
            return len(deleted)

    async def body_count(self) -> int:
        """Bodies in the store (metrics, tests)."""
        async with self._connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(bodies))).scalar_one())
