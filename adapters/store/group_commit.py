"""Group commit: concurrent writes share one transaction (issue 12, item 3).

Each intake wrote its document in a transaction of its own, then confirmed it in another: two commits
(two WAL flushes, two BEGIN/COMMIT round trips) per envelope, however many envelopes arrived at once.
Here a write that arrives while another transaction is under way waits for it, and goes with the others
that arrived meanwhile in the next one: at one request in flight nothing waits (the first write starts
at once, as before); at sixteen, sixteen writes take one or two commits.

A write is a function of the connection that runs its statements and returns a value; the writes of a
batch run one after the other in the batch's transaction. If any of them fails, or the commit does,
nothing of the batch is kept and each write runs again alone, in a transaction of its own, so that one
bad write fails only its own caller. The store's writes are idempotent (keys, ``ON CONFLICT DO
NOTHING``), so running one again after a failed batch is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["GroupCommit"]

T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[T]]

_WRITES_PER_TRANSACTION = 64  # a burst is cut into transactions of this many: locks are held briefly


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[T]):
    write: Write[T]
    result: asyncio.Future[T]


class GroupCommit:
    """Runs writes in shared transactions opened by *begin* (the store's translated ``_begin``)."""

    def __init__(self, begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> None:
        self._begin = begin
        self._waiting: list[_Waiting[Any]] = []
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # for the tests and the benchmark: how many transactions ran

    async def run(self, write: Write[T]) -> T:
        waiting: _Waiting[T] = _Waiting(write, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await asyncio.shield(waiting.result)

    async def idle(self) -> None:
        """Wait until no transaction of this group is under way (the store waits before it closes)."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[:_WRITES_PER_TRANSACTION]
            del self._waiting[:_WRITES_PER_TRANSACTION]
            if len(batch) == 1:
                await self._alone(batch[0])
                continue
            try:
                results = await self._together(batch)
            except Exception:
                for waiting in batch:
                    await self._alone(waiting)
                continue
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.result.done():
                    waiting.result.set_result(result)

    async def _together(self, batch: list[_Waiting[Any]]) -> list[Any]:
        self.transactions += 1
        async with self._begin() as conn:
            return [await waiting.write(conn) for waiting in batch]

    async def _alone(self, waiting: _Waiting[Any]) -> None:
        self.transactions += 1
        try:
            async with self._begin() as conn:
                result = await waiting.write(conn)
        except Exception as exc:
            if not waiting.result.done():
                waiting.result.set_exception(exc)
        else:
            if not waiting.result.done():
                waiting.result.set_result(result)
