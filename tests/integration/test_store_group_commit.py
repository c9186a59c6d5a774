"""Concurrent intakes share transactions on the real databases (issue 12, item 3): the documents and
their deliveries are all there, a duplicate is still refused, and far fewer commits ran."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event

from adapters.store import StatusStore
from adapters.store.timelines import Plan
from bus.delivery import AcceptedDocument, DeliveryRow, DeliveryState, TimelineEvent
from bus.errors import StoreError
from tests.integration.conftest import fresh_database
from tests.integration.dashboard_seed import engine_of

pytestmark = pytest.mark.asyncio

AT = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StatusStore]:
    async with fresh_database(request.param, tmp_path) as url:
        store = StatusStore.connect(url)
        await store.create_schema()
        yield store
        await store.close()


def _document(n: int) -> AcceptedDocument:
    return AcceptedDocument(
        bus_id=f"00000000-0000-4000-8000-{n:012d}",
        kind="document",
        sender="000.00.01.H99",
        document_id=f"000.00.01.H99,2026/12/01,{n}/VP",
        business_type=0,
        code=f"{n}/VP",
        subject="V/v thử ghi theo lô",
        accepted_at=AT,
        envelope_sha256=f"{n:064x}",
    )


async def test_concurrent_intakes_share_commits_and_lose_nothing(store: StatusStore) -> None:
    commits: list[int] = []
    event.listen(engine_of(store).sync_engine, "commit", lambda _conn: commits.append(1))
    documents = [_document(n) for n in range(48)]
    routes = [("000.00.21.H99", "local"), ("000.01.21.H99", "local")]

    async def intake(document: AcceptedDocument) -> str | None:
        earlier = await store.begin_accept(document, routes)
        if earlier is None:
            await store.confirm_accept(document, [r for r, _ in routes])
        return earlier

    assert await asyncio.gather(*(intake(d) for d in documents)) == [None] * 48
    assert len(commits) < 48  # two per intake before: 96
    for document in documents[::47]:
        rows = await store.deliveries(document.bus_id)
        assert [(r.recipient, r.state) for r in rows] == [
            ("000.00.21.H99", DeliveryState.ACCEPTED),
            ("000.01.21.H99", DeliveryState.ACCEPTED),
        ]
    # The same document again, among new ones: refused as a duplicate, the others accepted.
    again = await asyncio.gather(
        store.begin_accept(documents[3], routes),
        *(store.begin_accept(_document(n), routes) for n in (60, 61)),
    )
    assert again == [documents[3].bus_id, None, None]


async def _record(store: StatusStore, keyed: tuple[TimelineEvent, str]) -> bool:
    event, key = keyed
    return await store.record(event, key=key)


async def test_concurrent_events_share_commits_and_each_moves_its_delivery_by_the_rules(
    store: StatusStore,
) -> None:
    routes = [("000.00.21.H99", "local"), ("000.01.21.H99", "local")]
    documents = [_document(100 + n) for n in range(20)]
    for document in documents:
        assert await store.record_accepted(document, routes)
    commits: list[int] = []
    event.listen(engine_of(store).sync_engine, "commit", lambda _conn: commits.append(1))
    later = AT + dt.timedelta(minutes=1)

    def step(document: AcceptedDocument, recipient: str, state: DeliveryState) -> tuple[TimelineEvent, str]:
        return (
            TimelineEvent(document.bus_id, recipient, state, later),
            f"{document.bus_id}|{recipient}|{state.value}",
        )

    first, second = routes[0][0], routes[1][0]
    # Per document, at once (so in the same batches): first recipient queued; second recipient fetched
    # then done (a second layer of the same delivery in one batch), then a late queued (which must not
    # take it back), written twice (once).
    calls = []
    for document in documents:
        calls.append(_record(store, step(document, first, DeliveryState.QUEUED)))
        calls.append(_record(store, step(document, second, DeliveryState.FETCHED)))
        calls.append(_record(store, step(document, second, DeliveryState.DONE)))
        calls.append(_record(store, step(document, second, DeliveryState.QUEUED)))
        calls.append(_record(store, step(document, second, DeliveryState.QUEUED)))
    results = await asyncio.gather(*calls)
    assert results == [True, True, True, True, False] * 20  # the repeat in the same batch was there
    assert len(commits) < 20  # a hundred calls, one transaction each before
    for document in documents:
        rows = {r.recipient: r.state for r in await store.deliveries(document.bus_id)}
        assert rows == {first: DeliveryState.QUEUED, second: DeliveryState.DONE}
        states = sorted(e.state.value for e in await store.timeline(document.bus_id) if e.recipient == second)
        assert states == ["accepted", "done", "fetched", "queued"]
    # Written again (a redelivered message): nothing new, nothing moved back.
    assert await _record(store, step(documents[0], second, DeliveryState.FETCHED)) is False


async def test_an_event_that_cannot_be_written_fails_alone(store: StatusStore) -> None:
    document = _document(200)
    assert await store.record_accepted(document, [("000.00.21.H99", "local")])
    good = TimelineEvent(document.bus_id, "000.00.21.H99", DeliveryState.QUEUED, AT)
    # An event without its time breaks a NOT NULL column, so this write fails, and with it the batch it
    # shares; each is then written alone, and only this one fails.
    orphan = TimelineEvent(document.bus_id, "000.01.21.H99", DeliveryState.QUEUED, None)  # type: ignore[arg-type]
    outcomes = await asyncio.gather(
        store.record(good, key="good|queued"),
        store.record(orphan, key="orphan|queued"),
        return_exceptions=True,
    )
    assert outcomes[0] is True
    assert isinstance(outcomes[1], StoreError)
    assert {r.recipient: r.state for r in await store.deliveries(document.bus_id)} == {
        "000.00.21.H99": DeliveryState.QUEUED
    }


async def test_planned_writes_read_and_write_in_shared_transactions(store: StatusStore) -> None:
    """The AMQP agencies' acknowledgements: each reads its document's deliveries and writes what its
    plan makes of them, many in one transaction; a plan that finds nothing writes nothing."""
    documents = [_document(300 + n) for n in range(12)]
    for document in documents:
        assert await store.record_accepted(document, [("000.00.21.H99", "local"), ("000.01.21.H99", "local")])
    commits: list[int] = []
    event.listen(engine_of(store).sync_engine, "commit", lambda _conn: commits.append(1))
    later = AT + dt.timedelta(minutes=2)

    def done_for(bus_id: str, code: str) -> Plan[str]:
        def plan(rows: list[DeliveryRow]) -> tuple[str, Sequence[tuple[TimelineEvent, str]]] | None:
            row = next((r for r in rows if r.recipient == code), None)
            if row is None:
                return None
            event = TimelineEvent(bus_id, code, DeliveryState.DONE, later)
            return row.state.value, [(event, f"{bus_id}|{code}|done")]

        return plan

    results = await asyncio.gather(
        *(store.record_planned(d.bus_id, done_for(d.bus_id, "000.01.21.H99")) for d in documents),
        store.record_planned(documents[0].bus_id, done_for(documents[0].bus_id, "000.99.99.H99")),
    )
    assert results[:-1] == [("accepted", [True])] * 12  # each plan saw its delivery as it was
    assert results[-1] is None  # no delivery to that code: nothing written
    assert len(commits) < 12
    for document in documents:
        rows = {r.recipient: r.state for r in await store.deliveries(document.bus_id)}
        assert rows == {"000.00.21.H99": DeliveryState.ACCEPTED, "000.01.21.H99": DeliveryState.DONE}
