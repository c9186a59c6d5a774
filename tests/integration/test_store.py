"""The status store on both databases it supports: SQLite (a file) and the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from adapters.store import StatusStore
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent

pytestmark = pytest.mark.asyncio
PG_DSN = os.environ.get("BUS_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/bus_test")
T0 = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StatusStore]:
    if request.param == "sqlite":
        store = StatusStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
        await store.create_schema()
        yield store
        await store.close()
        return
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} ({exc}): run scripts/services.sh")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    url = PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)
    store = StatusStore.connect(url, connect_args={"server_settings": {"search_path": schema}})
    await store.create_schema()
    yield store
    await store.close()
    await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await admin.close()


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
    assert await store.find_duplicate(again) == first.bus_id
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
