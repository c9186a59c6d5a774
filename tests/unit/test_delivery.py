"""The delivery rules of the core (bus/delivery.py), without a database: a delivery only moves forward."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import pytest

from bus.delivery import (
    AcceptedDocument,
    AxisSend,
    DeadLetter,
    DeliveryRow,
    DeliveryState,
    InboxItem,
    may_replace,
    replaceable_by,
)

S = DeliveryState
T0 = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)

# The path of a local delivery, in order: each state may replace every one before it.
LOCAL_PATH = [S.ACCEPTED, S.QUEUED, S.FETCHED, S.PROCESSING, S.DONE]


def test_every_state_has_a_rank_and_a_label() -> None:
    for state in DeliveryState:
        assert isinstance(state.rank, int)
        assert state.label


@pytest.mark.parametrize(("earlier", "later"), list(itertools.pairwise(LOCAL_PATH)))
def test_a_delivery_moves_forward(earlier: DeliveryState, later: DeliveryState) -> None:
    assert may_replace(earlier, later)
    assert not may_replace(later, earlier)  # a late or redelivered event never takes it back


@pytest.mark.parametrize(
    ("late", "current"),
    [
        (S.QUEUED, S.FETCHED),  # the inbox worker's event arrives after the recipient fetched it
        (S.ACCEPTED, S.QUEUED),
        (S.PROCESSING, S.DONE),
        (S.RETRYING, S.SENT_TO_AXIS),
        (S.FETCHED, S.DEAD_LETTERED),
        # The intake confirms (writing "queued" for the outbound queue) after publishing: with group
        # commit the relay may already have sent it to the national axis.
        (S.QUEUED, S.SENT_TO_AXIS),
    ],
)
def test_a_late_event_does_not_move_it_back(late: DeliveryState, current: DeliveryState) -> None:
    assert not may_replace(current, late)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.PROCESSING, S.PROCESSING),  # the same state again (a redelivery): harmless
        (S.DONE, S.FAIL),  # final states of equal rank replace each other
        (S.FETCHED, S.STATUS),
        (S.SENT_TO_AXIS, S.STATUS),
    ],
)
def test_states_of_equal_rank_replace_each_other(current: DeliveryState, new: DeliveryState) -> None:
    assert current.rank == new.rank
    assert may_replace(current, new)
    assert may_replace(new, current)


def test_what_follows_a_replay_moves_the_delivery_on() -> None:
    # Replayed is the one step back (set by the store's mark_replayed, not by an event); after it the
    # delivery is queued, sent to the axis or fetched again, and those events must move it.
    for next_state in (S.QUEUED, S.SENT_TO_AXIS, S.FETCHED, S.DEAD_LETTERED):
        assert may_replace(S.REPLAYED, next_state)
    assert not may_replace(S.DEAD_LETTERED, S.REPLAYED)


def test_a_related_document_never_moves_a_delivery() -> None:
    assert [state for state in DeliveryState if may_replace(state, S.RELATED)] == [S.ACCEPTED, S.RELATED]


def test_replaceable_by_is_the_states_an_event_may_move() -> None:
    assert replaceable_by(S.QUEUED) == [S.ACCEPTED, S.RETRYING, S.QUEUED, S.REPLAYED, S.RELATED]
    assert set(replaceable_by(S.DONE)) == set(DeliveryState)
    for new in DeliveryState:
        assert set(replaceable_by(new)) == {s for s in DeliveryState if may_replace(s, new)}


def test_the_dedupe_key_tells_documents_apart() -> None:
    doc = AcceptedDocument(
        bus_id="b1",
        kind="document",
        sender="000.00.00.H99",
        document_id="000.00.00.H99,2026/11/20,1234/UBND-KGVX",
        business_type=0,
        code="1234/UBND-KGVX",
        subject=None,
        accepted_at=T0,
        envelope_sha256="0" * 64,
    )
    assert dataclasses.replace(doc, bus_id="b2").dedupe_key == doc.dedupe_key  # the same document twice
    assert dataclasses.replace(doc, business_type=2).dedupe_key != doc.dedupe_key  # an update
    status = dataclasses.replace(doc, kind="status", concerns="000.00.01.H99")
    assert status.dedupe_key != dataclasses.replace(status, concerns="000.00.02.H99").dedupe_key


def test_records_are_frozen_values() -> None:
    row = DeliveryRow("000.00.21.H99", "local", S.QUEUED, T0)
    item = InboxItem(1, "m1", "000.00.21.H99", "000.00.21.H99", "b1", "000.00.00.H99", "document", "d", T0)
    letter = DeadLetter("k1", "m1", "bus.inbox.x", "unreadable", T0)
    send = AxisSend(1, "b1", "000.00.00.G22", "axis-1", "m1", "document", {}, None, T0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.state = S.DONE  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.ack_state = "done"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        letter.replay_count = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        send.body = b""  # type: ignore[misc]
    assert letter.headers == {}
    assert letter.id == 0
    assert letter.replay_count == 0
    assert item.body is None
    assert item.fetched_at is None
