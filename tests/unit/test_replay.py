"""The replay use case (bus/replay.py) on fakes of its two ports: each dead letter is sent back, and only
then recorded; every way it can fail is a result, never an exception. tests/integration/test_deadletters.py
runs it on the real broker and both databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest

from bus.delivery import DeadLetter
from bus.errors import BrokerError, StoreError, StoreUnavailableError, UnroutableError
from bus.replay import ReplayOutcome, ReplayResult, replay

pytestmark = pytest.mark.asyncio

NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
EARLIER = NOW - dt.timedelta(hours=3)


def _letter(
    letter_id: int, *, queue: str = "bus.inbox.000.01.21.H99", replayed_at: dt.datetime | None = None
) -> DeadLetter:
    return DeadLetter(
        dead_key=f"k{letter_id}",
        message_id=f"m{letter_id}",
        source_queue=queue,
        reason="refused",
        dead_at=EARLIER,
        headers={"x-bus-id": f"b{letter_id}"},
        body=b"<edXML/>",
        id=letter_id,
        replayed_at=replayed_at,
        replay_count=0 if replayed_at is None else 1,
    )


class FakeStore:
    def __init__(self, *letters: DeadLetter, down: str = "") -> None:
        self.letters = {letter.id: letter for letter in letters}
        self.down = down  # "read" or "mark": that call fails as a lost database would
        self.journal: list[tuple[str, int]] = []

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        if self.down == "read":
            raise StoreUnavailableError("database is down")
        return self.letters.get(dead_letter_id)

    async def mark_replayed(self, dead_letter_id: int, at: dt.datetime) -> DeadLetter | None:
        if self.down == "mark":
            raise StoreError("database is down")
        letter = self.letters[dead_letter_id]
        self.letters[dead_letter_id] = dataclasses.replace(
            letter, replayed_at=at, replay_count=letter.replay_count + 1
        )
        self.journal.append(("marked", dead_letter_id))
        return self.letters[dead_letter_id]


class FakePublisher:
    def __init__(self, journal: list[tuple[str, int]], error: BrokerError | None = None) -> None:
        self.journal, self.error = journal, error
        self.tags: list[str] = []

    async def send_back(self, dead_letter: DeadLetter, *, replay_tag: str) -> None:
        if self.error is not None:
            raise self.error
        self.tags.append(replay_tag)
        self.journal.append(("sent", dead_letter.id))


async def test_a_dead_letter_is_sent_back_then_recorded() -> None:
    store = FakeStore(_letter(7))
    publisher = FakePublisher(store.journal)
    [result] = await replay(store, publisher, [7], NOW)
    assert result == ReplayResult(7, ReplayOutcome.REPLAYED, "bus.inbox.000.01.21.H99", 1, None)
    assert result.ok
    assert store.journal == [("sent", 7), ("marked", 7)]
    assert re.fullmatch(r"7/[0-9a-f]{12}", publisher.tags[0])  # a new dead letter if it dies again


async def test_results_come_in_the_order_asked_with_unknown_and_repeated_ids() -> None:
    store = FakeStore(_letter(1), _letter(2, replayed_at=EARLIER))
    publisher = FakePublisher(store.journal)
    results = await replay(store, publisher, [2, 404, 1, 1], NOW)
    assert [(r.id, r.outcome, r.replay_count) for r in results] == [
        (2, ReplayOutcome.REPLAYED_AGAIN, 2),
        (404, ReplayOutcome.UNKNOWN, 0),
        (1, ReplayOutcome.REPLAYED, 1),
        (1, ReplayOutcome.REPLAYED_AGAIN, 2),  # as asked: twice
    ]
    assert results[0].previously_replayed_at == EARLIER
    assert (results[1].error, results[1].ok) == ("no dead letter 404", False)
    assert len(set(publisher.tags)) == 3


async def test_nothing_says_where_it_came_from() -> None:
    store = FakeStore(_letter(3, queue=""))
    [result] = await replay(store, FakePublisher(store.journal), [3], NOW)
    assert (result.outcome, result.error) == (
        ReplayOutcome.FAILED,
        "nothing says which queue it came from: it cannot be replayed",
    )
    assert store.journal == []


async def test_what_the_broker_does_not_confirm_is_not_recorded_as_replayed() -> None:
    store = FakeStore(_letter(4))
    gone = UnroutableError("no queue is bound for routing key 'bus.gone'")
    [result] = await replay(store, FakePublisher(store.journal, gone), [4], NOW)
    assert (result.outcome, result.queue) == (ReplayOutcome.FAILED, "bus.inbox.000.01.21.H99")
    assert result.error == f"not replayed: {gone}"
    assert store.journal == []
    assert store.letters[4].replayed_at is None


async def test_a_store_that_cannot_be_read_replays_nothing() -> None:
    store = FakeStore(_letter(5), down="read")
    publisher = FakePublisher(store.journal)
    [result] = await replay(store, publisher, [5], NOW)
    assert (result.outcome, result.error) == (
        ReplayOutcome.FAILED,
        "cannot read the status store: database is down",
    )
    assert publisher.tags == []


async def test_sent_but_not_recorded_says_so_and_not_to_replay_it_again() -> None:
    store = FakeStore(_letter(6), down="mark")
    [result] = await replay(store, FakePublisher(store.journal), [6], NOW)
    assert result.outcome is ReplayOutcome.FAILED
    assert result.error == (
        "sent back to bus.inbox.000.01.21.H99, but the replay is not recorded (database is down): "
        "do not replay it again"
    )
    assert store.journal == [("sent", 6)]
