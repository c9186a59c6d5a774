"""Group commit on a fake transaction: concurrent writes share one (each kind in one call), a failing
write fails only itself, a lone write waits for nothing (adapters/store/group_commit.py; the real databases:
tests/integration/test_nonces.py and test_store_group_commit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store.group_commit import BatchCommit, Lane
from bus.errors import StoreError

pytestmark = pytest.mark.asyncio


class FakeDatabase:
    """Transactions that record what ran in them; a write of "boom" fails its transaction."""

    def __init__(self) -> None:
        self.committed: list[list[str]] = []
        self.open = 0

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        ran: list[str] = []
        self.open += 1
        try:
            yield cast(AsyncConnection, ran)
            await asyncio.sleep(0.01)  # the commit takes a while: writes arriving meanwhile wait
            if "boom" in ran:
                raise StoreError("the transaction failed")
            self.committed.append(ran)
        finally:
            self.open -= 1


async def _upper(conn: Any, items: list[str]) -> list[str]:
    conn.extend(items)
    return [item.upper() for item in items]


async def _lower(conn: Any, items: list[str]) -> list[str]:
    conn.extend(f"low:{item}" for item in items)
    return [item.lower() for item in items]


async def test_a_lone_write_runs_at_once_in_its_own_transaction() -> None:
    db = FakeDatabase()
    group = BatchCommit(Lane(db.begin), _upper)
    assert await group.run("a") == "A"
    assert db.committed == [["a"]]


async def test_concurrent_writes_share_transactions_and_keep_their_results() -> None:
    db = FakeDatabase()
    lane = Lane(db.begin)
    group = BatchCommit(lane, _upper)
    names = [f"w{n}" for n in range(40)]
    results = await asyncio.gather(*(group.run(n) for n in names))
    assert results == [n.upper() for n in names]
    assert sorted(w for t in db.committed for w in t) == sorted(names)  # each once
    assert len(db.committed) <= 3  # the first alone, then the rest together
    assert lane.transactions == len(db.committed)


async def test_writes_of_different_kinds_share_a_transaction_each_kind_in_one_call() -> None:
    db = FakeDatabase()
    lane = Lane(db.begin)
    upper, lower = BatchCommit(lane, _upper), BatchCommit(lane, _lower)
    first = asyncio.create_task(upper.run("first"))  # starts a transaction; the rest wait for the next
    await asyncio.sleep(0)
    results = await asyncio.gather(upper.run("a"), lower.run("B"), upper.run("c"), lower.run_all(["D", "E"]))
    assert await first == "FIRST"
    assert results == ["A", "b", "C", ["d", "e"]]
    assert db.committed == [["first"], ["a", "c", "low:B", "low:D", "low:E"]]


async def test_a_failing_write_fails_only_its_caller() -> None:
    db = FakeDatabase()
    group = BatchCommit(Lane(db.begin), _upper)
    first = asyncio.create_task(group.run("first"))  # starts a transaction; the rest wait
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.run(n)) for n in ("a", "boom", "b")]
    assert await first == "FIRST"
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == "A"
    assert outcomes[2] == "B"
    assert isinstance(outcomes[1], StoreError)
    # The shared transaction failed as a whole; each write then ran alone, and only "boom" failed.
    assert db.committed == [["first"], ["a"], ["b"]]
    assert db.open == 0


async def test_the_lane_is_idle_only_when_every_transaction_is_over() -> None:
    db = FakeDatabase()
    lane = Lane(db.begin)
    group = BatchCommit(lane, _upper)
    pending = [asyncio.create_task(group.run(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    await lane.idle()
    assert sorted(w for t in db.committed for w in t) == ["a", "b", "c"]  # all committed
    assert db.open == 0
    assert await asyncio.gather(*pending) == ["A", "B", "C"]
