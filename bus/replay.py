"""Replay: an operator sends dead letters back to the queue they came from (``bus replay``, the
dashboard's confirmed replay), once a cause is fixed.

Each one is published back with its headers and only then recorded as replayed (the document's
timeline shows it), so a replay that is not recorded says so rather than pretending. The store and the
broker are ports: the store reads and marks dead letters, the publisher sends one back
(:meth:`adapters.rabbitmq.Publisher.send_back` translates it into AMQP: its headers, the replay tag).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bus.delivery import DeadLetter
from bus.errors import BrokerError, StoreError

__all__ = ["ReplayOutcome", "ReplayPublisherPort", "ReplayResult", "ReplayStorePort", "replay"]


class ReplayStorePort(Protocol):
    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None: ...

    async def mark_replayed(self, dead_letter_id: int, at: dt.datetime) -> DeadLetter | None: ...


class ReplayPublisherPort(Protocol):
    async def send_back(self, dead_letter: DeadLetter, *, replay_tag: str) -> None:
        """Publish *dead_letter* to its source queue, tagged *replay_tag*; returns after the broker's
        confirm, raises :class:`~bus.errors.BrokerError` (UnroutableError: that queue is gone)."""


class ReplayOutcome(enum.StrEnum):
    REPLAYED = "replayed"
    REPLAYED_AGAIN = "replayed-again"  # the operator had replayed it before: sent once more
    UNKNOWN = "unknown"  # no dead letter with that id
    FAILED = "failed"  # not sent back (or sent but not recorded: see ``error``)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    id: int
    outcome: ReplayOutcome
    queue: str | None = None
    replay_count: int = 0  # replays of this dead letter so far, this one included
    previously_replayed_at: dt.datetime | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (ReplayOutcome.REPLAYED, ReplayOutcome.REPLAYED_AGAIN)


_STORE_ERRORS = (StoreError, OSError)


async def replay(
    store: ReplayStorePort, publisher: ReplayPublisherPort, ids: Sequence[int], at: dt.datetime
) -> list[ReplayResult]:
    """Send each dead letter back to its source queue with its headers, wait for the broker's confirm,
    then record the replay (:meth:`StatusStore.mark_replayed`: the document's timeline shows it). One
    result per id, in order; nothing is logged (``bus replay`` prints each result for the operator)."""
    return [await _replay_one(store, publisher, dead_letter_id, at) for dead_letter_id in ids]


async def _replay_one(
    store: ReplayStorePort, publisher: ReplayPublisherPort, dead_letter_id: int, at: dt.datetime
) -> ReplayResult:
    failed = ReplayOutcome.FAILED
    try:
        item = await store.dead_letter(dead_letter_id)
    except _STORE_ERRORS as exc:
        return ReplayResult(dead_letter_id, failed, error=f"cannot read the status store: {exc}")
    if item is None:
        return ReplayResult(dead_letter_id, ReplayOutcome.UNKNOWN, error=f"no dead letter {dead_letter_id}")
    queue = item.source_queue
    if not queue:
        return ReplayResult(
            dead_letter_id, failed, error="nothing says which queue it came from: it cannot be replayed"
        )
    try:
        # A tag of its own: should the replayed message be dead-lettered again, that is a new dead letter.
        await publisher.send_back(item, replay_tag=f"{dead_letter_id}/{uuid.uuid4().hex[:12]}")
    except BrokerError as exc:
        return ReplayResult(dead_letter_id, failed, queue, error=f"not replayed: {exc}")
    try:
        marked = await store.mark_replayed(dead_letter_id, at)
    except _STORE_ERRORS as exc:
        error = f"sent back to {queue}, but the replay is not recorded ({exc}): do not replay it again"
        return ReplayResult(dead_letter_id, failed, queue, error=error)
    count = marked.replay_count if marked is not None else item.replay_count + 1
    outcome = ReplayOutcome.REPLAYED if item.replayed_at is None else ReplayOutcome.REPLAYED_AGAIN
    return ReplayResult(dead_letter_id, outcome, queue, count, item.replayed_at)
