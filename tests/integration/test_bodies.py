"""The body store on both databases (issue 12, item 1): each envelope once, in chunks, read back a chunk
at a time; and its garbage collection, which deletes a body only when everything that names it is
final and the retention period has passed, never before."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text

from adapters.store import StatusStore
from adapters.store.bodies import CHUNK
from bus.delivery import AcceptedDocument, AxisSend, DeadLetter, DeliveryState, InboxItem, TimelineEvent
from bus.errors import StoreError
from bus.headers import BodyRef
from tests.integration.conftest import fresh_database

pytestmark = pytest.mark.asyncio
T0 = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)
KEEP = dt.timedelta(days=30)
RECIPIENT, OTHER = "000.01.21.H99", "000.02.21.H99"


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StatusStore]:
    async with fresh_database(request.param, tmp_path) as url:
        store = StatusStore.connect(url)
        await store.create_schema()
        yield store
        await store.close()


def _ref(data: bytes) -> BodyRef:
    return BodyRef(hashlib.sha256(data).hexdigest(), len(data))


async def _read(store: StatusStore, sha256: str) -> list[bytes]:
    return [chunk async for chunk in store.body_chunks(sha256)]


async def _document(store: StatusStore, recipients: list[str], data: bytes) -> tuple[str, BodyRef]:
    """An accepted document to *recipients* whose sealed envelope *data* is in the body store."""
    bus_id = str(uuid.uuid4())
    document = AcceptedDocument(
        bus_id, "document", "000.00.00.H99", f"000.00.00.H99,2026/11/20,{bus_id[:8]}/UBND", 0,
        "1/UBND", "V/v lưu trữ hồ sơ", T0, "0" * 64,
    )  # fmt: skip
    assert await store.record_accepted(document, [(r, "local") for r in recipients])
    ref = _ref(data)
    await store.put_body(ref, io.BytesIO(data), bus_id=bus_id, at=T0)
    return bus_id, ref


async def _move(
    store: StatusStore, bus_id: str, recipient: str, state: DeliveryState, at: dt.datetime
) -> None:
    event = TimelineEvent(bus_id, recipient, state, at)
    assert await store.record(event, key=f"{bus_id}|{recipient}|{state}|{at}")


async def test_a_body_is_stored_in_chunks_once_and_read_back_a_chunk_at_a_time(store: StatusStore) -> None:
    data = os.urandom(2 * CHUNK + 12345)
    bus_id, ref = await _document(store, [RECIPIENT], data)
    chunks = await _read(store, ref.sha256)
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 12345]
    assert b"".join(chunks) == data
    assert await store.body_size(ref.sha256) == len(data)
    assert await store.body_head(ref.sha256) == (len(data), None)  # three chunks: streamed, not read here
    assert await store.read_body(ref.sha256) == data
    # Stored again (a retry, another gateway): still one body.
    await store.put_body(ref, io.BytesIO(data), bus_id=bus_id)
    assert await store.body_count() == 1
    assert await store.missing_bodies([ref.sha256, "f" * 64]) == {"f" * 64}


async def test_a_body_of_one_chunk_is_read_with_its_size_in_one_query(store: StatusStore) -> None:
    data = "<edXML>Văn bản một khối</edXML>".encode() * 100
    _, ref = await _document(store, [RECIPIENT], data)
    assert await store.body_head(ref.sha256) == (len(data), data)
    assert await store.read_body(ref.sha256) == data
    assert await store.body_head("0" * 64) is None


async def test_a_body_of_other_bytes_than_announced_is_not_stored(store: StatusStore) -> None:
    data = "Văn bản gốc".encode()
    with pytest.raises(StoreError, match="not the 999 announced"):
        await store.put_body(BodyRef(_ref(data).sha256, 999), io.BytesIO(data), bus_id=str(uuid.uuid4()))
    assert await store.body_count() == 0
    assert await store.body_size(_ref(data).sha256) is None


async def test_the_inbox_keeps_a_carried_envelope_once_for_all_its_recipients(store: StatusStore) -> None:
    data = "<edXML>Ủy ban nhân dân tỉnh</edXML>".encode()
    bus_id, _ = await _document(store, [RECIPIENT, OTHER], b"<edXML>another sealing</edXML>")
    items = [
        InboxItem(0, f"{bus_id}|{r}", r, r, bus_id, "000.00.00.H99", "document", "d", T0, body=data)
        for r in (RECIPIENT, OTHER)
    ]
    assert await store.store_inbox_many(items) == [True, True]
    assert await store.body_count() == 2  # the one the intake stored, and this one, once
    fetched = await store.fetch(RECIPIENT, (await store.inbox(RECIPIENT))[0].id, T0)
    assert fetched is not None
    assert fetched.body_sha256 == _ref(data).sha256
    assert b"".join(await _read(store, fetched.body_sha256)) == data  # byte for byte


async def test_a_body_still_needed_survives_any_collection(store: StatusStore) -> None:
    _, ref = await _document(store, [RECIPIENT, OTHER], b"<edXML>hai noi nhan</edXML>")
    years = T0 + dt.timedelta(days=3650)
    assert await store.collect_bodies(years, retention=KEEP) == 0  # accepted, not delivered
    assert await store.body_size(ref.sha256) is not None


async def test_a_released_body_goes_once_the_retention_has_passed(store: StatusStore) -> None:
    bus_id, ref = await _document(store, [RECIPIENT, OTHER], os.urandom(CHUNK + 1))
    done_at = T0 + dt.timedelta(days=2)
    await _move(store, bus_id, RECIPIENT, DeliveryState.DONE, done_at)
    assert await store.collect_bodies(done_at + KEEP * 2, retention=KEEP) == 0  # the other has it not
    await _move(store, bus_id, OTHER, DeliveryState.FAIL, done_at)
    assert await store.collect_bodies(done_at + KEEP - dt.timedelta(hours=1), retention=KEEP) == 0
    assert await store.body_size(ref.sha256) is not None  # released, but not for long enough
    assert await store.collect_bodies(done_at + KEEP + dt.timedelta(hours=1), retention=KEEP) == 1
    assert await store.body_size(ref.sha256) is None
    assert await store.missing_bodies([ref.sha256]) == {ref.sha256}
    with pytest.raises(StoreError, match="not in the body store"):
        await _read(store, ref.sha256)


async def test_an_inbox_entry_not_acknowledged_holds_its_body(store: StatusStore) -> None:
    """Whatever its delivery says (a delivery moved on by another path, a document restored from an
    older backup): the recipient has not said it is done with it."""
    bus_id, ref = await _document(store, [RECIPIENT], b"<edXML>chua xu ly</edXML>")
    item = InboxItem(
        0,
        f"{bus_id}|{RECIPIENT}",
        RECIPIENT,
        RECIPIENT,
        bus_id,
        "x",
        "document",
        "d",
        T0,
        body_sha256=ref.sha256,
    )
    await store.store_inbox_many([item])
    await _move(store, bus_id, RECIPIENT, DeliveryState.FAILED, T0)
    later = T0 + KEEP * 3
    assert await store.collect_bodies(later, retention=KEEP) == 0
    [entry] = await store.inbox(RECIPIENT)
    await store.acknowledge(RECIPIENT, entry.id, DeliveryState.PROCESSING, T0 + dt.timedelta(days=1))
    assert await store.collect_bodies(later, retention=KEEP) == 0
    await store.acknowledge(RECIPIENT, entry.id, DeliveryState.DONE, T0 + dt.timedelta(days=1))
    assert await store.collect_bodies(later, retention=KEEP) == 1


async def test_a_dead_letter_holds_its_body_until_it_is_replayed(store: StatusStore) -> None:
    bus_id, ref = await _document(store, [RECIPIENT], b"<edXML>hang loi</edXML>")
    dead = DeadLetter(
        "dead-1", f"{bus_id}|{RECIPIENT}", "bus.org.x", "poison", T0, bus_id=bus_id, recipient=RECIPIENT,
        headers={"x-bus-body-sha256": ref.sha256, "x-bus-body-size": ref.size}, body=b"",
    )  # fmt: skip
    assert await store.store_dead_letter(dead)
    [stored] = await store.dead_letters()
    later = T0 + KEEP * 3
    assert await store.collect_bodies(later, retention=KEEP) == 0  # an operator may replay it
    await store.mark_replayed(stored.id, T0 + dt.timedelta(days=1))
    assert await store.collect_bodies(later, retention=KEEP) == 0  # replayed: on its way again
    await _move(store, bus_id, RECIPIENT, DeliveryState.DONE, T0 + dt.timedelta(days=2))
    assert await store.collect_bodies(later, retention=KEEP) == 1


async def test_a_send_the_national_axis_has_not_confirmed_holds_its_body(store: StatusStore) -> None:
    bus_id, ref = await _document(store, ["000.00.00.G22"], b"<edXML>ra truc quoc gia</edXML>")
    sent_at = T0 + dt.timedelta(hours=1)
    send = AxisSend(
        0, bus_id, "000.00.00.G22", "axis-1", f"{bus_id}|000.00.00.G22", "document", {}, b"", sent_at
    )
    event = TimelineEvent(bus_id, "000.00.00.G22", DeliveryState.SENT_TO_AXIS, sent_at)
    await store.record_axis_send(send, event, key=f"{bus_id}|axis|1")
    later = T0 + KEEP * 3
    assert await store.collect_bodies(later, retention=KEEP) == 0  # the axis may still lose it
    [unconfirmed] = await store.unconfirmed_axis_sends(later)
    await store.settle_axis_send(unconfirmed.id, "confirmed", T0 + dt.timedelta(days=1))
    assert await store.collect_bodies(later, retention=KEEP) == 1
    assert await store.body_size(ref.sha256) is None


async def test_a_body_stored_again_is_not_collected_from_under_its_new_copy(store: StatusStore) -> None:
    data = b"<edXML>lai lan nua</edXML>"
    bus_id, ref = await _document(store, [RECIPIENT], data)
    await _move(store, bus_id, RECIPIENT, DeliveryState.DONE, T0)
    later = T0 + KEEP * 3
    await store.put_body(ref, io.BytesIO(data), bus_id=str(uuid.uuid4()), at=later - dt.timedelta(days=1))
    assert await store.collect_bodies(later, retention=KEEP) == 0
    assert await store.read_body(ref.sha256) == data


async def test_collection_goes_in_batches(store: StatusStore) -> None:
    for n in range(5):
        bus_id, _ = await _document(store, [RECIPIENT], f"<edXML>{n}</edXML>".encode())
        await _move(store, bus_id, RECIPIENT, DeliveryState.DONE, T0)
    later = T0 + KEEP * 2
    assert [await store.collect_bodies(later, retention=KEEP, limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert await store.body_count() == 0


async def test_a_store_made_before_the_body_store_gets_its_column(store: StatusStore) -> None:
    async with store._begin() as conn:
        await conn.execute(text("DROP INDEX ix_inbox_body_sha256"))
        await conn.execute(text("ALTER TABLE inbox DROP COLUMN body_sha256"))
    await store.create_schema()
    data = b"<edXML>sau nang cap</edXML>"
    bus_id = str(uuid.uuid4())
    item = InboxItem(
        0, f"{bus_id}|{RECIPIENT}", RECIPIENT, RECIPIENT, bus_id, "x", "document", "d", T0, body=data
    )
    assert await store.store_inbox_many([dataclasses.replace(item)]) == [True]
    [entry] = await store.inbox(RECIPIENT)
    assert entry.body_sha256 == _ref(data).sha256
