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
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["BatchCommit", "GroupCommit"]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741  # an item of a batch
R = TypeVar("R")  # its result
Write = Callable[[AsyncConnection], Awaitable[T]]
WriteMany = Callable[[AsyncConnection, list[I]], Awaitable[list[R]]]

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


class BatchCommit(Generic[I, R]):
    """Like :class:`GroupCommit`, for writes that are items of one kind (timeline events): the items
    that arrive while a transaction is under way are written by one call of *write_many* (few
    statements for many items: set-based SQL), which returns one result per item. If the batch fails,
    each item is written again alone, so that one bad item fails only its own caller."""

    def __init__(
        self,
        begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        write_many: WriteMany[I, R],
        *,
        max_items: int = 256,
    ) -> None:
        self._begin = begin
        self._write_many = write_many
        self._max_items = max_items
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # for the tests and the benchmark: how many transactions ran

    async def run(self, item: I) -> R:
        (result,) = await self.run_all([item])
        return result

    async def run_all(self, items: Sequence[I]) -> list[R]:
        """*items*, in order, in the next transactions (together, unless the batch is cut there)."""
        loop = asyncio.get_running_loop()
        mine = [(item, loop.create_future()) for item in items]
        self._waiting.extend(mine)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return list(await asyncio.shield(asyncio.gather(*(future for _, future in mine))))

    async def idle(self) -> None:
        """Wait until no transaction of this batcher is under way."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_items]
            del self._waiting[: self._max_items]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for item, future in batch:
                    try:
                        (result,) = await self._write([item])
                    except Exception as alone:
                        _settle(future, alone)
                    else:
                        _settle(future, result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _write(self, items: list[I]) -> list[R]:
        self.transactions += 1
        async with self._begin() as conn:
            return await self._write_many(conn, items)


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
