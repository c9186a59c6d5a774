"""Request nonces by group commit (issue 12): concurrent requests share one transaction, a replay is
refused by every gateway, a repeat inside one batch too (real SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event

from adapters.store import StatusStore
from tests.integration.conftest import fresh_database
from tests.integration.dashboard_seed import engine_of

pytestmark = pytest.mark.asyncio

NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
KEEP = dt.timedelta(minutes=10)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as database:
        yield database


async def _store(url: str) -> StatusStore:
    store = StatusStore.connect(url)
    await store.create_schema()
    return store


async def test_concurrent_requests_share_commits_and_each_nonce_is_taken_once(url: str) -> None:
    store = await _store(url)
    commits: list[int] = []
    event.listen(engine_of(store).sync_engine, "commit", lambda _conn: commits.append(1))
    try:
        nonces = [f"n{i:04d}" + "x" * 12 for i in range(200)]
        first = await asyncio.gather(
            *(store.remember_nonce("000.00.01.H99", n, NOW, keep=KEEP) for n in nonces)
        )
        assert all(first)
        assert 1 <= len(commits) < 20  # 200 requests, a handful of transactions (one each before)
        again = await asyncio.gather(
            *(store.remember_nonce("000.00.01.H99", n, NOW, keep=KEEP) for n in nonces)
        )
        assert not any(again)  # replays
        # The same nonce twice in one batch: one of the two is the replay.
        twice = await asyncio.gather(
            *(store.remember_nonce("000.00.02.H99", "y" * 20, NOW, keep=KEEP) for _ in range(2))
        )
        assert sorted(twice) == [False, True]
        # Another agency may use the same nonce.
        assert await store.remember_nonce("000.00.02.H99", nonces[0], NOW, keep=KEEP)
    finally:
        await store.close()


async def test_a_replay_to_another_gateway_is_refused(url: str) -> None:
    one, other = await _store(url), await _store(url)
    try:
        assert await one.remember_nonce("000.00.01.H99", "z" * 20, NOW, keep=KEEP)
        assert not await other.remember_nonce("000.00.01.H99", "z" * 20, NOW, keep=KEEP)
    finally:
        await one.close()
        await other.close()
