"""The node's garbage collection of the body store (entrypoints/runtime.py): batch after batch while
batches come back full, then a pause; a database outage is logged and the next round tries again."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bus.errors import StoreUnavailableError
from bus.settings import StoreSettings
from entrypoints.runtime import _collect_bodies

pytestmark = pytest.mark.asyncio


class FakeBodies:
    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[dt.timedelta, int]] = []
        self.done = asyncio.Event()

    async def collect_bodies(self, now: dt.datetime, *, retention: dt.timedelta, limit: int = 100) -> int:
        self.calls.append((retention, limit))
        if not self.answers:
            self.done.set()
            await asyncio.Event().wait()  # nothing more to say: wait to be cancelled
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_full_batches_are_followed_at_once_and_an_outage_is_waited_out() -> None:
    store = FakeBodies([2, 2, 1, StoreUnavailableError("database down"), 0, 2, 0])
    section = StoreSettings(body_retention_days=7, gc_interval_s=0.01, gc_batch=2)
    task = asyncio.create_task(_collect_bodies(store, section))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(store.done.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(store.calls) == 8  # 2, 2, 1 | outage | 0 | 2, 0 | (waiting)
    assert set(store.calls) == {(dt.timedelta(days=7), 2)}
