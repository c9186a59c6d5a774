"""The audit log in the status store (issue 15; the format is :mod:`bus.audit`'s, docs/audit.md).

Every transaction of the store may carry audit entries (:meth:`AuditLog._audit`): when it commits, they
are appended to this process's chain *in that transaction*, so a state change never lands without its
record, nor a record without its change. Appending is one statement on PostgreSQL (the chain's head
moves, guarded by its previous ``seq``, and the records are inserted from arrays) under a lock that
this process holds from that statement to the commit: transactions of one process append one after the
other, and processes never wait on each other (one chain each). The head is kept in memory; if another
writer moved it (a commit whose answer was lost, then retried), the guard fails and the head is read
again, in the same transaction.

Checkpoints (one gateway at a time: its leadership) sign the heads of every chain; old records go to
signed archives and are removed once the retention period has passed (:meth:`prune_audit`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.base import StoreBase, utc
from adapters.store.group_commit import BatchCommit, Lane
from adapters.store.tables import audit_archives, audit_chains, audit_checkpoints, audit_records
from bus.audit import GENESIS, Checkpoint, Entry, Head, SealedRecord, checkpoint_payload, heads_of, seal

__all__ = ["AuditLog", "StoredCheckpoint", "StoredRecord"]

_AUDIT = "bus.audit.entries"  # where a transaction's entries wait, in its connection's info

_PG_APPEND = text(
    "WITH moved AS (UPDATE audit_chains SET seq = :new_seq, head = :new_head, updated_at = :at "
    "WHERE chain_id = :chain AND seq = :old_seq RETURNING chain_id) "
    "INSERT INTO audit_records (chain_id, seq, at, kind, bus_id, sha256, record) "
    "SELECT moved.chain_id, v.seq, v.at, v.kind, v.bus, v.sha, v.rec FROM moved, "
    "unnest(CAST(:seq AS bigint[]), CAST(:ats AS timestamptz[]), CAST(:kind AS varchar[]), "
    "CAST(:bus AS varchar[]), CAST(:sha AS varchar[]), CAST(:rec AS text[])) "
    "AS v(seq, at, kind, bus, sha, rec)"
)
_CHECKPOINT_LOCK = 4242018  # one checkpoint at a time, whichever gateway writes it


StoredRecord = SealedRecord  # a record as read back: what was sealed and written


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    number: int
    at: dt.datetime
    sha256: str
    payload: bytes
    jws: str
    timestamp: bytes | None
    heads: dict[str, Head]

    def as_checkpoint(self) -> Checkpoint:
        return Checkpoint(self.number, self.jws, self.timestamp)


class _Chain:
    """This process's chain: its id, head and lock."""

    def __init__(self, chain_id: str) -> None:
        self.id = chain_id
        self.head = Head(0, GENESIS)
        self.opened = False
        self.lock = asyncio.Lock()
        self.origin: dict[str, Any] = {}


def _new_chain_id(node: str) -> str:
    return f"{node or 'bus'}.{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.{uuid.uuid4().hex[:8]}"


class AuditLog(StoreBase):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._audit_on = True
        self._chain = _Chain(_new_chain_id(""))
        self._pg_audit = engine.dialect.name == "postgresql"
        self._audit_lane = Lane(self._begin)
        self._notes: BatchCommit[Entry, None] = BatchCommit(self._audit_lane, self._note_many)

    # -- set-up -------------------------------------------------------------------------------------

    def configure_audit(self, *, enabled: bool = True, node: str = "", **origin: Any) -> None:
        """Before the first write: whether to keep the log (off only to measure its cost), and what this
        process's chain says of itself in its first record (the node; the command that runs)."""
        self._audit_on = enabled
        if not self._chain.opened and node:
            self._chain.id = _new_chain_id(node)
        self._chain.origin = {"node": node, **origin}

    @property
    def audit_chain(self) -> str:
        return self._chain.id

    @property
    def audit_enabled(self) -> bool:
        return self._audit_on

    async def close(self) -> None:
        await self._audit_lane.idle()
        await super().close()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction (as :meth:`StoreBase._begin`) whose audit entries are appended to this
        process's chain just before it commits; the chain's lock is held from there to the commit."""
        chain = self._chain
        locked = False
        try:
            with self._translated():
                async with self._engine.connect() as conn:
                    try:
                        if not self._pg_audit and self._audit_on:
                            # SQLite has one writer at a time: a transaction that wrote, waiting here for
                            # the lock, would hold the database from the one holding the lock (a stall
                            # until the busy timeout). Its transactions take the lock from the start.
                            await chain.lock.acquire()
                            locked = True
                        async with conn.begin():
                            yield conn
                            entries: list[Entry] | None = conn.info.pop(_AUDIT, None)
                            if entries:
                                if not locked:
                                    await chain.lock.acquire()
                                    locked = True
                                head = await self._append_audit(conn, entries)
                        if entries:  # committed
                            chain.head, chain.opened = head, True
                    finally:
                        if not conn.invalidated and not conn.closed:
                            conn.info.pop(_AUDIT, None)
        finally:
            if locked:
                chain.lock.release()

    # -- writing ------------------------------------------------------------------------------------

    def _audit(self, conn: AsyncConnection, entries: Sequence[Entry]) -> None:
        """Append *entries* to the log when the transaction of *conn* commits (in it)."""
        if not self._audit_on:
            # Off (to measure its cost), the log still says so: the start-up record, whose settings
            # show audit.enabled = false, is kept. A gateway never runs unrecorded without a trace.
            entries = [e for e in entries if e.kind == "node.started"]
        if entries:
            conn.info.setdefault(_AUDIT, []).extend(entries)

    async def audit_note(self, entry: Entry) -> None:
        """Record *entry* alone (a refusal, an operator's action, a start-up): in a transaction shared
        with other notes."""
        await self._notes.run(entry)

    async def _note_many(self, conn: AsyncConnection, entries: list[Entry]) -> list[None]:
        self._audit(conn, entries)
        return [None] * len(entries)

    async def _append_audit(self, conn: AsyncConnection, entries: list[Entry]) -> Head:
        """Write *entries* after the chain's head, in *conn*'s transaction; the caller holds the lock and
        makes the returned head current once the transaction commits."""
        chain = self._chain
        first = entries[0].at
        if not chain.opened:
            await conn.execute(
                self._insert_ignoring_duplicates(audit_chains),
                {"chain_id": chain.id, "seq": 0, "head": GENESIS, "opened_at": first, "updated_at": first},
            )
            opened = Entry(
                "chain.opened",
                first,
                {**chain.origin, "host": socket.gethostname(), "pid": os.getpid()},
            )
            entries = [opened, *entries]
        head = chain.head
        for attempt in range(2):
            records = seal(chain.id, head, entries)
            if await self._write_records(conn, head, records):
                return Head(records[-1].seq, records[-1].sha256)
            if attempt:
                break
            head = await self._read_head(conn)
            if not chain.opened and head.seq > 0:
                entries = entries[1:]  # the chain was opened by a commit whose answer was lost
        raise RuntimeError(f"audit chain {chain.id} moved while this process held its lock")

    async def _read_head(self, conn: AsyncConnection) -> Head:
        row = (
            await conn.execute(
                select(audit_chains.c.seq, audit_chains.c.head)
                .where(audit_chains.c.chain_id == self._chain.id)
                .with_for_update()
            )
        ).one()
        return Head(int(row.seq), str(row.head))

    async def _write_records(self, conn: AsyncConnection, head: Head, records: list[SealedRecord]) -> bool:
        last = records[-1]
        if self._pg_audit:
            written = await conn.execute(
                _PG_APPEND,
                {
                    "new_seq": last.seq,
                    "new_head": last.sha256,
                    "at": last.at,
                    "chain": self._chain.id,
                    "old_seq": head.seq,
                    "seq": [r.seq for r in records],
                    "ats": [r.at for r in records],
                    "kind": [r.kind for r in records],
                    "bus": [r.bus_id for r in records],
                    "sha": [r.sha256 for r in records],
                    "rec": [r.data.decode("utf-8") for r in records],
                },
            )
            return bool(written.rowcount == len(records))
        moved = await conn.execute(
            update(audit_chains)
            .where(audit_chains.c.chain_id == self._chain.id, audit_chains.c.seq == head.seq)
            .values(seq=last.seq, head=last.sha256, updated_at=last.at)
        )
        if not moved.rowcount:
            return False
        await conn.execute(
            insert(audit_records),
            [
                {
                    "chain_id": r.chain,
                    "seq": r.seq,
                    "at": r.at,
                    "kind": r.kind,
                    "bus_id": r.bus_id,
                    "sha256": r.sha256,
                    "record": r.data.decode("utf-8"),
                }
                for r in records
            ],
        )
        return True

    # -- checkpoints --------------------------------------------------------------------------------

    async def write_checkpoint(
        self, at: dt.datetime, node: str, sign: Callable[[bytes], str], *, force: bool = False
    ) -> StoredCheckpoint | None:
        """Sign the heads of every chain as the next checkpoint; None when no chain moved since the last
        (unless *force*). One writer at a time (a transaction-scoped lock on PostgreSQL)."""
        async with self._begin() as conn:
            if self._pg_audit:
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({_CHECKPOINT_LOCK})"))
            last = await self._last_checkpoint(conn)
            rows = await conn.execute(
                select(audit_chains.c.chain_id, audit_chains.c.seq, audit_chains.c.head).where(
                    audit_chains.c.seq > 0
                )
            )
            heads = {r.chain_id: Head(int(r.seq), r.head) for r in rows}
            if not heads or (last is not None and last.heads == heads and not force):
                return None
            number = 1 if last is None else last.number + 1
            payload = checkpoint_payload(number, at, node, GENESIS if last is None else last.sha256, heads)
            digest = hashlib.sha256(payload).hexdigest()
            jws = sign(payload)
            await conn.execute(
                insert(audit_checkpoints),
                {
                    "number": number,
                    "at": at,
                    "sha256": digest,
                    "payload": payload.decode("utf-8"),
                    "jws": jws,
                },
            )
        return StoredCheckpoint(number, at, digest, payload, jws, None, heads)

    async def set_checkpoint_timestamp(self, number: int, token: bytes) -> None:
        async with self._begin() as conn:
            await conn.execute(
                update(audit_checkpoints).where(audit_checkpoints.c.number == number).values(timestamp=token)
            )

    async def _last_checkpoint(self, conn: AsyncConnection) -> StoredCheckpoint | None:
        row = (
            await conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.number.desc()).limit(1))
        ).first()
        return None if row is None else _checkpoint(row)

    async def audit_checkpoints(
        self, *, first: int | None = None, last: int | None = None
    ) -> list[StoredCheckpoint]:
        query = select(audit_checkpoints).order_by(audit_checkpoints.c.number)
        if first is not None:
            query = query.where(audit_checkpoints.c.number >= first)
        if last is not None:
            query = query.where(audit_checkpoints.c.number <= last)
        async with self._connect() as conn:
            return [_checkpoint(r) for r in await conn.execute(query)]

    async def audit_progress(self) -> tuple[int, StoredCheckpoint | None]:
        """Records written in all (the sum of the chains' seq) and the last checkpoint: whether one is due."""
        async with self._connect() as conn:
            total = (await conn.execute(select(func.coalesce(func.sum(audit_chains.c.seq), 0)))).scalar_one()
            return int(total), await self._last_checkpoint(conn)

    # -- reading ------------------------------------------------------------------------------------

    async def audit_heads(self) -> dict[str, Head]:
        """Each chain's head as ``audit_chains`` keeps it (moved in the transaction of each append)."""
        query = select(audit_chains.c.chain_id, audit_chains.c.seq, audit_chains.c.head)
        async with self._connect() as conn:
            return {r.chain_id: Head(int(r.seq), r.head) for r in await conn.execute(query)}

    async def audit_records(
        self, *, after: Mapping[str, Head] | None = None, upto: Mapping[str, Head] | None = None
    ) -> AsyncIterator[StoredRecord]:
        """Every record, by chain and seq, streamed; *after*: from the record after these heads; *upto*:
        only chains it names, to its heads."""
        query = select(audit_records).order_by(audit_records.c.chain_id, audit_records.c.seq)
        with self._translated():
            # In a transaction: asyncpg opens a server-side cursor only inside one.
            async with self._engine.connect() as conn:
                result = await conn.stream(query.execution_options(yield_per=1000))
                async for row in result:
                    start = (after or {}).get(row.chain_id)
                    if start is not None and row.seq <= start.seq:
                        continue
                    if upto is not None:
                        end = upto.get(row.chain_id)
                        if end is None or row.seq > end.seq:
                            continue
                    yield StoredRecord(
                        row.chain_id,
                        int(row.seq),
                        utc(row.at),
                        row.kind,
                        row.bus_id,
                        row.sha256,
                        row.record.encode("utf-8"),
                    )

    async def audit_of(self, bus_id: str) -> list[StoredRecord]:
        """The records naming a document, in the order they were written."""
        query = (
            select(audit_records)
            .where(audit_records.c.bus_id == bus_id)
            .order_by(audit_records.c.at, audit_records.c.chain_id, audit_records.c.seq)
        )
        async with self._connect() as conn:
            return [
                StoredRecord(
                    r.chain_id, int(r.seq), utc(r.at), r.kind, r.bus_id, r.sha256, r.record.encode("utf-8")
                )
                for r in await conn.execute(query)
            ]

    async def audit_anchor(self) -> StoredCheckpoint | None:
        """The checkpoint the records kept in the table start after (the last archive's), if any."""
        async with self._connect() as conn:
            number = (
                await conn.execute(select(func.max(audit_archives.c.last_checkpoint)))
            ).scalar_one_or_none()
            if number is None:
                return None
            row = (
                await conn.execute(select(audit_checkpoints).where(audit_checkpoints.c.number == number))
            ).first()
        return None if row is None else _checkpoint(row)

    async def last_audit_archive(self) -> tuple[str, str, int] | None:
        """(name, SHA-256, last checkpoint) of the newest archive that retention wrote."""
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(audit_archives).order_by(audit_archives.c.last_checkpoint.desc()).limit(1)
                )
            ).first()
        return None if row is None else (row.name, row.sha256, int(row.last_checkpoint))

    # -- retention ----------------------------------------------------------------------------------

    async def prune_audit(self, upto: StoredCheckpoint, archive: tuple[str, str]) -> int:
        """Remove the records *upto* covers and the checkpoints before it, once *archive* (name,
        SHA-256: written and synced by the caller) holds them; *upto* stays, as the anchor of what is
        left. Returns the records removed."""
        removed = 0
        async with self._begin() as conn:
            for chain, head in upto.heads.items():
                gone = await conn.execute(
                    delete(audit_records).where(
                        audit_records.c.chain_id == chain, audit_records.c.seq <= head.seq
                    )
                )
                removed += gone.rowcount or 0
            await conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.number < upto.number))
            await conn.execute(
                insert(audit_archives),
                {
                    "name": archive[0],
                    "sha256": archive[1],
                    "last_checkpoint": upto.number,
                    "written_at": dt.datetime.now(dt.UTC),
                },
            )
        return removed


def _checkpoint(row: Any) -> StoredCheckpoint:
    payload = row.payload.encode("utf-8")
    try:
        heads = heads_of(json.loads(payload))
    except (ValueError, KeyError, TypeError):  # changed in the table: the verifier compares it with its JWS
        heads = {}
    return StoredCheckpoint(int(row.number), utc(row.at), row.sha256, payload, row.jws, row.timestamp, heads)


def entry_fields(**fields: Any) -> dict[str, Any]:
    """Fields without the ones that are None (a record says only what it knows)."""
    return {k: v for k, v in fields.items() if v is not None}
