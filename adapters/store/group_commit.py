"""Group commit: concurrent writes share one transaction, and writes of one kind share statements
(issue 12, item 3).

Each intake wrote its document in a transaction of its own, then confirmed it in another, and every
timeline event had its own: several commits (WAL flushes, BEGIN/COMMIT round trips) per envelope,
however many envelopes arrived at once. Here every write of the store's hot path waits in one
:class:`Lane`: a write that arrives while a transaction is under way goes, with all that arrived
meanwhile, in the next one. At one request in flight nothing waits (the first write starts at once, as
before); at sixteen, the intakes, their confirmations, the ``queued`` events and the acknowledgements of
sixteen envelopes take one or two commits.

A write is an item of a kind (:class:`BatchCommit`: "begin an intake", "record an event"); the items
of one kind in a transaction are written by one call of the kind's *write_many*, which returns one
result per item (set-based SQL: a few statements for many items). Results are handed out after the
commit. If the transaction fails, each item is written again alone, in a transaction of its own, so
that one bad write fails only its own caller. The store's writes are idempotent (keys, ``ON CONFLICT DO
NOTHING``), so writing one again after a failed batch is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["BatchCommit", "Lane"]

I = TypeVar("I")  # noqa: E741  # an item of a batch
R = TypeVar("R")  # its result
WriteMany = Callable[[AsyncConnection, list[I]], Awaitable[list[R]]]

_ITEMS_PER_TRANSACTION = 256  # a burst is cut into transactions of this many: locks are held briefly


class Lane:
    """The writer of shared transactions opened by *begin* (the store's translated ``_begin``)."""

    def __init__(
        self,
        begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        *,
        max_items: int = _ITEMS_PER_TRANSACTION,
    ) -> None:
        self._begin = begin
        self._max_items = max_items
        self._waiting: list[tuple[BatchCommit[Any, Any], Any, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # for the tests and the benchmark: how many transactions ran

    def _add(self, batcher: BatchCommit[I, R], items: Sequence[I]) -> list[asyncio.Future[R]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        self._waiting.extend((batcher, item, future) for item, future in zip(items, futures, strict=True))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return futures

    async def idle(self) -> None:
        """Wait until no transaction of this lane is under way (the store waits before it closes)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_items]
            del self._waiting[: self._max_items]
            try:
                results = await self._write(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][2], exc)
                    continue
                for entry in batch:
                    try:
                        (result,) = await self._write([entry])
                    except Exception as alone:
                        _settle(entry[2], alone)
                    else:
                        _settle(entry[2], result)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _write(self, batch: list[tuple[BatchCommit[Any, Any], Any, asyncio.Future[Any]]]) -> list[Any]:
        """Each kind's items by one call of its *write_many*, in the order the kinds came; the results
        in the order of *batch*."""
        kinds: dict[BatchCommit[Any, Any], list[int]] = {}
        for index, (batcher, _, _) in enumerate(batch):
            kinds.setdefault(batcher, []).append(index)
        results: list[Any] = [None] * len(batch)
        self.transactions += 1
        async with self._begin() as conn:
            for batcher, indexes in kinds.items():
                written = await batcher.write_many(conn, [batch[i][1] for i in indexes])
                if len(written) != len(indexes):
                    raise RuntimeError(f"{batcher!r} gave {len(written)} results for {len(indexes)} items")
                for i, result in zip(indexes, written, strict=True):
                    results[i] = result
        return results


class BatchCommit(Generic[I, R]):
    """Writes of one kind, in the transactions of *lane*: the items in one transaction are written by one
    call of *write_many*, which returns one result per item."""

    def __init__(self, lane: Lane, write_many: WriteMany[I, R]) -> None:
        self._lane = lane
        self.write_many = write_many

    async def run(self, item: I) -> R:
        (result,) = await self.run_all([item])
        return result

    async def run_all(self, items: Sequence[I]) -> list[R]:
        """*items*, in order, in the next transactions (together, unless the batch is cut there)."""
        futures = self._lane._add(self, items)
        return list(await asyncio.shield(asyncio.gather(*futures)))


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
