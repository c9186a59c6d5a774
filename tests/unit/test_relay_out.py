"""Relay out on fakes (no broker, no axis): what it does with each outbound message for each answer of
the national axis, and that the message is acknowledged only after the event and any copy are durable.
tests/integration/test_relay.py runs the same against the mock axis on the real broker."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.national_axis import CircuitBreaker, RelayOut
from adapters.rabbitmq import BrokerNames
from bus.delivery import AxisSend, DeliveryState, TimelineEvent
from bus.errors import AxisRejectedError, AxisUnavailableError
from tests.amqp_fakes import BUS_ID, HEADERS, FakeChannel, FakeMessage, FakePublisher, Journal

pytestmark = pytest.mark.asyncio

NAMES = BrokerNames("test")
OUTBOUND = NAMES.outbound_queue
DELAYS = (5_000, 30_000)
RECIPIENT = "000.01.21.H99"


class FakeAxis:
    """sendEdoc answers with *answers* in turn: a DocId, or an error to raise."""

    def __init__(self, journal: Journal, *answers: str | Exception) -> None:
        self.journal, self.answers = journal, list(answers)

    async def send_edoc(self, body: bytes, *, sender: str, to: list[str], message_type: str) -> str:
        self.journal.append(("send_edoc", sender, tuple(to), message_type))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def count_received(self) -> int:
        return 0


class FakeEventStore:
    def __init__(self, journal: Journal, failures: int = 0) -> None:
        self.journal, self.failures = journal, failures
        self.sends: list[AxisSend] = []

    def _write(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("database is down")

    async def record(self, event: TimelineEvent, *, key: str) -> bool:
        self._write()
        self.journal.append(("event", event.state, event.detail, key))
        return True

    async def record_axis_send(self, send: AxisSend, event: TimelineEvent, *, key: str) -> None:
        self._write()
        self.sends.append(send)
        self.journal.append(("event", event.state, event.detail, key))


async def _relay(
    journal: Journal,
    axis: FakeAxis,
    *,
    store: FakeEventStore | None = None,
    breaker: CircuitBreaker | None = None,
) -> tuple[RelayOut, FakeChannel]:
    channel = FakeChannel()
    relay = RelayOut(
        channel,  # type: ignore[arg-type]
        NAMES,
        store or FakeEventStore(journal),
        FakePublisher(journal),
        axis,  # type: ignore[arg-type]
        breaker or CircuitBreaker(threshold=100),
        retry_delays_ms=DELAYS,
        store_retry_s=0.01,
    )
    await relay.start()
    return relay, channel


async def _take(relay: RelayOut, channel: FakeChannel, message: FakeMessage) -> None:
    await channel.queues[OUTBOUND].deliver(message)
    await relay.stop()


def _key(attempt: int, again: str = "") -> str:
    return f"{BUS_ID}|{RECIPIENT}|axis|{again}|{attempt}"


async def test_what_the_axis_takes_is_recorded_with_its_copy_then_acknowledged() -> None:
    journal: Journal = []
    store = FakeEventStore(journal, failures=2)  # held while the store is down, not acknowledged
    relay, channel = await _relay(journal, FakeAxis(journal, "axis-42"), store=store)
    message = FakeMessage(journal, headers={**HEADERS, "x-bus-replay": "9/abc", "x-bus-attempt": 1})
    await _take(relay, channel, message)
    assert journal == [
        ("send_edoc", "000.00.01.H99", (RECIPIENT,), "edoc"),
        ("event", DeliveryState.SENT_TO_AXIS, "trục quốc gia nhận, mã axis-42 (lần gửi 2)", _key(2, "9/abc")),
        ("ack", message.message_id),
    ]
    [kept] = store.sends
    assert (kept.axis_doc_id, kept.message_id, kept.body) == ("axis-42", message.message_id, b"<edXML/>")
    assert kept.headers == {**HEADERS, "x-bus-replay": "9/abc"}  # what a resend puts back: no attempt
    assert (relay.attempts, relay.sent) == (1, 1)


async def test_a_temporary_failure_waits_in_a_retry_queue_and_counts_towards_the_breaker() -> None:
    journal: Journal = []
    breaker = CircuitBreaker(threshold=100)
    relay, channel = await _relay(
        journal, FakeAxis(journal, AxisUnavailableError("timed out")), breaker=breaker
    )
    message = FakeMessage(journal)
    await _take(relay, channel, message)
    _, event, retry, ack = journal
    assert event == (
        "event",
        DeliveryState.RETRYING,
        "lần gửi 1 lỗi tạm thời: timed out; thử lại sau 5 giây",
        _key(1),
    )
    assert retry[:6] == ("retry", OUTBOUND, 5_000, message.message_id, 1, HEADERS)
    assert 4_000 <= retry[6] <= 5_000  # jitter within the tier
    assert ack == ("ack", message.message_id)
    assert (relay.retried, breaker.failures) == (1, 1)


async def test_when_the_attempts_are_used_up_it_is_dead_lettered_with_the_reason() -> None:
    journal: Journal = []
    relay, channel = await _relay(journal, FakeAxis(journal, AxisUnavailableError("timed out")))
    message = FakeMessage(journal, headers={**HEADERS, "x-bus-attempt": 2})
    await _take(relay, channel, message)
    assert journal[1:] == [
        ("event", DeliveryState.FAILED, "lần gửi 3: timed out", _key(3)),
        ("dead_letter", OUTBOUND, message.message_id, "gave up after 3 attempts: timed out", HEADERS),
        ("ack", message.message_id),
    ]
    assert (relay.retried, relay.dead_lettered) == (0, 1)


async def test_a_refusal_is_dead_lettered_at_once() -> None:
    journal: Journal = []
    refusal = AxisRejectedError("404", "unknown recipient")
    relay, channel = await _relay(journal, FakeAxis(journal, refusal))
    message = FakeMessage(journal)
    await _take(relay, channel, message)
    assert journal[1:] == [
        ("event", DeliveryState.FAILED, f"lần gửi 1: {refusal}", _key(1)),
        ("dead_letter", OUTBOUND, message.message_id, f"{refusal} (attempt 1)", HEADERS),
        ("ack", message.message_id),
    ]
    assert (relay.rejected, relay.dead_lettered) == (1, 1)


async def test_while_the_circuit_is_open_a_message_is_parked_without_using_an_attempt() -> None:
    journal: Journal = []
    breaker = CircuitBreaker(threshold=1, open_s=60)
    relay, channel = await _relay(journal, FakeAxis(journal), breaker=breaker)
    [in_hand] = channel.queues[OUTBOUND].consumers.values()
    breaker.failure("down")  # opens: the relay stops consuming, but one message was already in hand
    message = FakeMessage(journal, headers={**HEADERS, "x-bus-attempt": 1})
    await in_hand(message)
    await relay.stop()
    assert journal == [
        ("retry", OUTBOUND, 5_000, message.message_id, 1, HEADERS, None),
        ("ack", message.message_id),
    ]
    assert relay.attempts == 0


async def test_a_message_that_is_not_the_bus_s_is_dead_lettered_and_never_sent() -> None:
    journal: Journal = []
    relay, channel = await _relay(journal, FakeAxis(journal))
    headers: dict[str, Any] = {"x-bus-id": BUS_ID, "x-bus-recipient": RECIPIENT}
    message = FakeMessage(journal, headers=headers)
    await _take(relay, channel, message)
    reason = "not a bus message: missing x-bus-sender, x-bus-kind, x-bus-document-id"
    assert journal == [
        ("dead_letter", OUTBOUND, message.message_id, reason, headers),
        ("ack", message.message_id),
    ]
    assert (relay.attempts, relay.dead_lettered) == (0, 1)
