"""The rules of what an agency may do with what the bus holds for it (bus/access.py), with no database:
which acknowledgements it may send, that done and fail are final, who may read a document, and which
fetch is the first."""

from __future__ import annotations

import datetime as dt

import pytest

from bus.access import (
    ACKNOWLEDGEMENT_FORM,
    Acknowledgement,
    acknowledgement,
    confirm_acknowledged,
    is_first_fetch,
    may_read,
)
from bus.delivery import DeliveryState
from bus.errors import AlreadyFinalError, BadAcknowledgementError, InputError
from bus.organ_id import OrganId

LIMIT = 1000


# -- acknowledgements: which states, and a fail needs its reason -------------------------------------


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("processing", None, Acknowledgement(DeliveryState.PROCESSING)),
        ("done", None, Acknowledgement(DeliveryState.DONE)),
        ("done", "", Acknowledgement(DeliveryState.DONE, "")),
        ("fail", "tệp đính kèm hỏng", Acknowledgement(DeliveryState.FAIL, "tệp đính kèm hỏng")),
        ("fail", "x" * LIMIT, Acknowledgement(DeliveryState.FAIL, "x" * LIMIT)),
    ],
)
def test_an_agency_acknowledges_with_processing_done_or_fail(
    state: str, reason: str | None, expected: Acknowledgement
) -> None:
    assert acknowledgement(state, reason, max_reason_chars=LIMIT) == expected


@pytest.mark.parametrize(
    "state",
    # Only the recipient's transport states: the bus's own (fetched, queued, ...) are not the agency's
    # to set; JSON values that are not text are refused whatever they print as.
    [None, "", "DONE", "fetched", "queued", "dead-lettered", "status", True, 1, ["done"], {"done": 1}],
)
def test_no_other_state_is_an_acknowledgement(state: object) -> None:
    with pytest.raises(BadAcknowledgementError) as caught:
        acknowledgement(state, None, max_reason_chars=LIMIT)
    assert str(caught.value) == ACKNOWLEDGEMENT_FORM


def test_a_fail_needs_a_reason() -> None:
    for reason in (None, ""):
        with pytest.raises(BadAcknowledgementError, match="'fail' acknowledgement needs a reason"):
            acknowledgement("fail", reason, max_reason_chars=LIMIT)


@pytest.mark.parametrize("reason", [42, ["why"], {"text": "why"}, False])
def test_a_reason_is_text(reason: object) -> None:
    with pytest.raises(BadAcknowledgementError, match="reason must be text"):
        acknowledgement("fail", reason, max_reason_chars=LIMIT)


def test_a_reason_is_a_sentence_not_a_document() -> None:
    with pytest.raises(BadAcknowledgementError, match=f"reason has {LIMIT + 1} characters; at most {LIMIT}"):
        acknowledgement("done", "x" * (LIMIT + 1), max_reason_chars=LIMIT)


def test_a_bad_acknowledgement_is_bad_input() -> None:
    """The CLI and the API treat it as the client's mistake, not the bus's."""
    assert issubclass(BadAcknowledgementError, InputError)
    assert issubclass(BadAcknowledgementError, ValueError)


# -- forward only: done and fail are final --------------------------------------------------------------


@pytest.mark.parametrize("state", [DeliveryState.PROCESSING, DeliveryState.DONE, DeliveryState.FAIL])
def test_an_acknowledgement_the_store_recorded_is_confirmed(state: DeliveryState) -> None:
    confirm_acknowledged(7, Acknowledgement(state, "r"), state.value)  # also the same one repeated


@pytest.mark.parametrize(
    ("requested", "recorded"),
    [
        (DeliveryState.PROCESSING, "done"),  # a late "processing" does not reopen a done envelope
        (DeliveryState.PROCESSING, "fail"),
        (DeliveryState.DONE, "fail"),
        (DeliveryState.FAIL, "done"),
    ],
)
def test_a_final_envelope_cannot_reopen(requested: DeliveryState, recorded: str) -> None:
    with pytest.raises(AlreadyFinalError, match=f"envelope 7 was already acknowledged as {recorded}$"):
        confirm_acknowledged(7, Acknowledgement(requested, "r"), recorded)


# -- who may read a document ---------------------------------------------------------------------------

PROVINCE = OrganId.parse("000.00.00.H99")
DISTRICT = OrganId.parse("000.00.21.H99")
COMMUNE = OrganId.parse("000.01.21.H99")
MERGED_AWAY = OrganId.parse("000.04.21.H99")  # the commune's code before the 2025 reform


def test_the_sender_may_read_its_document() -> None:
    assert may_read(PROVINCE, (), str(PROVINCE), [str(DISTRICT)])


def test_a_recipient_may_read_the_document() -> None:
    assert may_read(DISTRICT, (), str(PROVINCE), [str(COMMUNE), str(DISTRICT)])


def test_a_former_code_counts_as_the_agency() -> None:
    assert may_read(COMMUNE, [MERGED_AWAY], str(PROVINCE), [str(MERGED_AWAY)])  # addressed by the old code
    assert may_read(COMMUNE, [MERGED_AWAY], str(MERGED_AWAY), [str(PROVINCE)])  # sent before the merger


def test_nobody_else_may_read_it() -> None:
    assert not may_read(COMMUNE, [MERGED_AWAY], str(PROVINCE), [str(DISTRICT)])
    assert not may_read(COMMUNE, (), str(PROVINCE), [])  # a document without deliveries


# -- the first fetch ---------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)


def test_the_fetch_that_set_fetched_at_is_the_first() -> None:
    assert is_first_fetch(NOW, NOW)


def test_a_later_fetch_is_not_the_first() -> None:
    assert not is_first_fetch(NOW - dt.timedelta(seconds=1), NOW)
    assert not is_first_fetch(None, NOW)
