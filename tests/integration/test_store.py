"""The status store on both databases it supports: SQLite (a file) and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from adapters.store import DocumentSearch, StatusStore
from bus.delivery import AcceptedDocument, DeliveryState, InboxItem, TimelineEvent
from bus.errors import StoreError, StoreUnavailableError
from tests.integration.conftest import PG_ADMIN_DSN, fresh_database

pytestmark = pytest.mark.asyncio
T0 = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StatusStore]:
    async with fresh_database(request.param, tmp_path) as url:
        store = StatusStore.connect(url)
        await store.create_schema()
        yield store
        await store.close()


def _document(
    document_id: str = "000.00.00.H99,2026/11/20,1234/UBND-KGVX", business_type: int = 0
) -> AcceptedDocument:
    return AcceptedDocument(
        bus_id=str(uuid.uuid4()),
        kind="document",
        sender="000.00.00.H99",
        document_id=document_id,
        business_type=business_type,
        code="1234/UBND-KGVX",
        subject="V/v chuyển đổi số — Hòa Tiến",
        accepted_at=T0,
        envelope_sha256="0" * 64,
    )


async def test_accepted_document_has_a_delivery_per_recipient(store: StatusStore) -> None:
    doc = _document()
    assert await store.record_accepted(doc, [("000.00.21.H99", "local"), ("000.00.00.G22", "outbound")])
    assert [(d.recipient, d.route, d.state) for d in await store.deliveries(doc.bus_id)] == [
        ("000.00.00.G22", "outbound", DeliveryState.ACCEPTED),
        ("000.00.21.H99", "local", DeliveryState.ACCEPTED),
    ]
    row = await store.document(doc.bus_id)
    assert row is not None
    assert row.subject == "V/v chuyển đổi số — Hòa Tiến"  # Vietnamese survives byte for byte
    assert row.accepted_at == T0


async def test_same_document_twice_is_a_duplicate(store: StatusStore) -> None:
    first, again = _document(), _document()
    assert await store.record_accepted(first, [("000.00.21.H99", "local")])
    assert not await store.record_accepted(again, [("000.00.21.H99", "local")])
    assert await store.begin_accept(again, [("000.00.21.H99", "local")]) == first.bus_id
    assert await store.document(again.bus_id) is None
    # An update (business type 2) of the same document is a new envelope, not a duplicate.
    assert await store.record_accepted(_document(business_type=2), [("000.00.21.H99", "local")])


async def test_timeline_in_order_and_writes_are_idempotent(store: StatusStore) -> None:
    doc = _document()
    await store.record_accepted(doc, [("000.01.21.H99", "local")])
    steps = [
        (DeliveryState.QUEUED, None),
        (DeliveryState.FETCHED, None),
        (DeliveryState.STATUS, "03 Đã tiếp nhận"),
        (DeliveryState.STATUS, "06 Hoàn thành"),
    ]
    for minute, (state, detail) in enumerate(steps, start=1):
        event = TimelineEvent(doc.bus_id, "000.01.21.H99", state, T0 + dt.timedelta(minutes=minute), detail)
        key = f"{doc.bus_id}|000.01.21.H99|{state}|{detail}"
        assert await store.record(event, key=key)
        assert not await store.record(event, key=key)  # a redelivered message writes nothing new
    timeline = await store.timeline(doc.bus_id)
    assert [(e.state, e.detail) for e in timeline] == [(DeliveryState.ACCEPTED, None), *steps]
    assert [e.at for e in timeline] == sorted(e.at for e in timeline)
    [delivery] = await store.deliveries(doc.bus_id)
    assert delivery.state is DeliveryState.STATUS
    assert delivery.updated_at == T0 + dt.timedelta(minutes=4)


async def test_find_by_document_id_or_bus_id(store: StatusStore) -> None:
    doc = _document(document_id="000.00.02.H99,2026/11/21,77/STC-NS")
    await store.record_accepted(doc, [("000.00.00.H99", "local")])
    assert [r.bus_id for r in await store.find("000.00.02.H99,2026/11/21,77/STC-NS")] == [doc.bus_id]
    assert [r.document_id for r in await store.find(doc.bus_id)] == [doc.document_id]
    assert await store.find("không có") == []


async def test_unconfirmed_document_is_not_a_duplicate_until_confirmed(store: StatusStore) -> None:
    doc = _document()
    routes = [("000.00.21.H99", "local")]
    assert await store.begin_accept(doc, routes) is None
    assert await store.begin_accept(doc, routes) is None  # the retry (same bus id) is not refused
    await store.confirm_accept(doc, ["000.00.21.H99"])
    assert await store.begin_accept(doc, routes) == doc.bus_id
    assert [e.state for e in await store.timeline(doc.bus_id)] == [DeliveryState.ACCEPTED]


def _inbox_item(doc: AcceptedDocument, recipient: str, addressed_to: str | None = None) -> InboxItem:
    return InboxItem(
        id=0,
        message_id=f"{doc.bus_id}|{addressed_to or recipient}",
        agency=recipient,
        addressed_to=addressed_to or recipient,
        bus_id=doc.bus_id,
        sender=doc.sender,
        kind=doc.kind,
        document_id=doc.document_id,
        received_at=T0 + dt.timedelta(seconds=1),
        body="<edXML>Ủy ban nhân dân</edXML>".encode(),
    )


async def test_inbox_fetch_and_acknowledge_write_the_timeline_once(store: StatusStore) -> None:
    doc = _document()
    await store.record_accepted(doc, [("000.01.21.H99", "local"), ("000.04.21.H99", "local")])
    assert await store.store_inbox_many([_inbox_item(doc, "000.01.21.H99")]) == [True]
    redelivered = await store.store_inbox_many([_inbox_item(doc, "000.01.21.H99")])
    assert redelivered == [False]  # nothing new
    # A former code (alias) lands in the merged agency's inbox, tracked under the code it was sent to.
    assert await store.store_inbox_many(
        [_inbox_item(doc, "000.03.21.H99", addressed_to="000.04.21.H99")]
    ) == [True]
    [item] = await store.inbox("000.01.21.H99")
    assert item.body is None  # listing never carries bodies
    assert await store.fetch("000.03.21.H99", item.id, T0) is None  # another agency's envelope
    fetched = await store.fetch("000.01.21.H99", item.id, T0 + dt.timedelta(seconds=2))
    assert fetched is not None
    assert fetched.body is None  # the inbox names its envelope in the body store (issue 12)
    assert fetched.body_sha256 is not None
    stored = b"".join([chunk async for chunk in store.body_chunks(fetched.body_sha256)])
    assert stored == "<edXML>Ủy ban nhân dân</edXML>".encode()
    assert await store.body_count() == 1  # kept once for both recipients
    again = await store.fetch("000.01.21.H99", item.id, T0 + dt.timedelta(seconds=9))
    assert again is not None
    assert again.fetched_at == T0 + dt.timedelta(seconds=2)  # the first fetch counts
    acked = await store.acknowledge(
        "000.01.21.H99", item.id, DeliveryState.DONE, T0 + dt.timedelta(seconds=3)
    )
    assert acked is not None
    assert acked.ack_state == "done"
    assert await store.inbox("000.01.21.H99", pending_only=True) == []
    assert await store.inbox_counts() == {"000.03.21.H99": 1}
    states = [(e.recipient, e.state) for e in await store.timeline(doc.bus_id)]
    assert states == [
        ("000.01.21.H99", DeliveryState.ACCEPTED),
        ("000.04.21.H99", DeliveryState.ACCEPTED),
        ("000.01.21.H99", DeliveryState.QUEUED),
        ("000.04.21.H99", DeliveryState.QUEUED),
        ("000.01.21.H99", DeliveryState.FETCHED),
        ("000.01.21.H99", DeliveryState.DONE),
    ]
    by_recipient = {d.recipient: d.state for d in await store.deliveries(doc.bus_id)}
    assert by_recipient == {"000.01.21.H99": DeliveryState.DONE, "000.04.21.H99": DeliveryState.QUEUED}


async def test_a_late_event_never_moves_a_delivery_back(store: StatusStore) -> None:
    doc = _document()
    await store.record_accepted(doc, [("000.01.21.H99", "local")])
    late = T0 + dt.timedelta(minutes=5)
    await store.record(TimelineEvent(doc.bus_id, "000.01.21.H99", DeliveryState.DONE, late), key="done")
    await store.record(TimelineEvent(doc.bus_id, "000.01.21.H99", DeliveryState.QUEUED, late), key="queued")
    [delivery] = await store.deliveries(doc.bus_id)
    assert delivery.state is DeliveryState.DONE


async def test_sent_lists_documents_with_their_recipients_state(store: StatusStore) -> None:
    older = _document(document_id="000.00.00.H99,2026/11/19,1/UBND")
    newer = dataclasses.replace(_document(), accepted_at=T0 + dt.timedelta(hours=1))
    await store.record_accepted(older, [("000.00.21.H99", "local")])
    await store.record_accepted(newer, [("000.00.22.H99", "local"), ("000.00.00.G22", "outbound")])
    sent = await store.sent("000.00.00.H99")
    assert [doc.bus_id for doc, _ in sent] == [newer.bus_id, older.bus_id]
    assert [d.recipient for d in sent[0][1]] == ["000.00.00.G22", "000.00.22.H99"]
    assert await store.sent("000.00.21.H99") == []


async def test_inbox_keeps_a_message_whose_document_the_store_never_saw(store: StatusStore) -> None:
    stranger = _document()  # never recorded: the event table's foreign key must not block the inbox
    assert await store.store_inbox_many([_inbox_item(stranger, "000.01.21.H99")]) == [True]
    [item] = await store.inbox("000.01.21.H99")
    assert item.bus_id == stranger.bus_id
    assert await store.timeline(stranger.bus_id) == []


async def test_a_retry_with_other_bytes_is_refused_not_republished(store: StatusStore) -> None:
    doc = _document()
    routes = [("000.00.21.H99", "local")]
    assert await store.begin_accept(doc, routes) is None  # first attempt, then the broker failed
    changed = dataclasses.replace(doc, envelope_sha256="1" * 64)
    assert await store.begin_accept(changed, routes) == doc.bus_id  # other content: refused
    assert await store.begin_accept(doc, routes) is None  # the same bytes again: go on


# -- the store's errors are the bus's (issue 11: translate at the edge) -----------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_store_whose_database_is_down_raises_store_unavailable(kind: str, tmp_path: Path) -> None:
    down = (
        "postgresql+asyncpg://bus:pg-secret-77@127.0.0.1:1/nowhere"  # nothing listens on port 1
        if kind == "postgresql"
        else f"sqlite+aiosqlite:///{tmp_path / 'removed-directory' / 'bus.db'}"
    )
    store = StatusStore.connect(down)
    try:
        calls = {
            "ping": store.ping(),
            "create_schema": store.create_schema(),
            "record_accepted": store.record_accepted(_document(), [("000.00.21.H99", "local")]),
            "deliveries": store.deliveries("b1"),
            "remember_nonce": store.remember_nonce("000.00.21.H99", "n1", T0, keep=dt.timedelta(minutes=5)),
            "dead_letters": store.dead_letters(),
            "search_documents": store.search_documents(DocumentSearch()),
        }
        for name, call in calls.items():
            with pytest.raises(StoreUnavailableError, match="cannot be reached") as raised:
                await call
            assert raised.value.__cause__ is not None, name  # raise ... from the driver's error
            assert "pg-secret-77" not in str(raised.value), name  # the URL without its password
    finally:
        await store.close()
        # aiosqlite stops the thread of a connection that failed to open without waiting for it; the
        # thread then answers on this event loop, which must still be open (else the next test fails).
        for thread in threading.enumerate():
            if "_connection_worker_thread" in thread.name:
                await asyncio.to_thread(thread.join, 5)


async def test_a_dropped_connection_is_unavailable_and_the_next_call_reconnects(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        store = StatusStore.connect(url)
        try:
            await store.create_schema()
            assert await store.deliveries("b1") == []  # a connection now waits in the pool
            admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    url.rsplit("/", 1)[1],
                )
            finally:
                await admin.close()
            with pytest.raises(StoreUnavailableError):
                await store.deliveries("b1")
            assert await store.deliveries("b1") == []  # temporary: the pool opened a new connection
        finally:
            await store.close()


async def test_other_database_errors_are_store_errors(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        store = StatusStore.connect(url)  # no create_schema: the tables are missing
        try:
            with pytest.raises(StoreError, match='relation "deliveries" does not exist') as raised:
                await store.deliveries("b1")
            assert not isinstance(raised.value, StoreUnavailableError)
        finally:
            await store.close()
