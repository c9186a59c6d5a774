"""One gateway at a time runs the jobs that must not run twice (adapters/store/leadership.py), on the
real PostgreSQL: two "gateways" (two stores on one database) never run the job together, and when the
leader's session dies (its backend terminated, as when its machine goes) the other takes over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from adapters.store import StatusStore
from tests.integration.conftest import PG_ADMIN_DSN, fresh_database

pytestmark = pytest.mark.asyncio

CHECK_S = 0.2


class Job:
    def __init__(self, name: str, running: list[str]) -> None:
        self.name, self.running = name, running
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        self.running.append(self.name)

    async def stop(self) -> None:
        self.running.remove(self.name)


async def _until(condition: object, within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def test_one_gateway_leads_and_another_takes_over_when_its_session_dies(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        first, second = StatusStore.connect(url), StatusStore.connect(url)
        running: list[str] = []
        a, b = Job("a", running), Job("b", running)
        lead_a = first.leadership("test:relay-in", check_s=CHECK_S)
        lead_b = second.leadership("test:relay-in", check_s=CHECK_S)
        serving_a = asyncio.create_task(lead_a.serve(a.start, a.stop))
        await _until(lambda: running == ["a"])
        serving_b = asyncio.create_task(lead_b.serve(b.start, b.stop))
        try:
            await asyncio.sleep(CHECK_S * 5)
            assert running == ["a"]  # b tried, and waits
            assert lead_a.leading
            assert not lead_b.leading
            # a's database session dies (its machine is gone): a stops at its next check, b leads.
            admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
            try:
                ended = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
                    "JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
                    url.rsplit("/", 1)[1],
                )
                assert ended == 1  # the holder's session, and only it
            finally:
                await admin.close()
            await _until(lambda: running == ["b"])
            assert b.starts == 1
            assert lead_b.leading
            # a tries again and waits: never both.
            await asyncio.sleep(CHECK_S * 5)
            assert running == ["b"]
        finally:
            for task in (serving_a, serving_b):
                task.cancel()
            await asyncio.gather(serving_a, serving_b, return_exceptions=True)
            await first.close()
            await second.close()
        assert running == []  # each stopped what it ran


async def test_on_sqlite_the_one_gateway_simply_leads(tmp_path: Path) -> None:
    store = StatusStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    running: list[str] = []
    job = Job("only", running)
    serving = asyncio.create_task(
        store.leadership("test:collect", check_s=CHECK_S).serve(job.start, job.stop)
    )
    try:
        await _until(lambda: running == ["only"])
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await store.close()
    assert running == []
