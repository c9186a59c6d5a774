"""Concurrent intakes share transactions on the real databases (issue 12, item 3): the documents and
their deliveries are all there, a duplicate is still refused, and far fewer commits ran."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event

from adapters.store import StatusStore
from bus.delivery import AcceptedDocument, DeliveryState
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
