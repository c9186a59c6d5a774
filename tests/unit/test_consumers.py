"""What the consumers of the bus's queues decide for each message, on in-memory fakes (no broker): the
decision by error type, the parser of incoming messages, the settling (the durable step before the
acknowledgement), and the inbox and dead-letter workers on top of them. The same paths run on the
real broker in tests/integration/test_rabbitmq.py, test_deadletters.py and test_no_loss.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from adapters.rabbitmq.consumer import ACK, REQUEUE, Action, Decision, QueueConsumer, decide
from adapters.rabbitmq.deadletters import DeadLetterWorker
from adapters.rabbitmq.headers import from_amqp, to_amqp
from adapters.rabbitmq.inbox import InboxWorker
from adapters.rabbitmq.names import BrokerNames
from adapters.rabbitmq.parser import parse_message
from bus.delivery import InboxItem
from bus.errors import (
    AxisRejectedError,
    AxisUnavailableError,
    BrokerError,
    EnvelopeInvalidError,
    PoisonMessageError,
    Problem,
)
from bus.headers import BusHeaders
from bus.organ_id import OrganId
from bus.settings import load_topology
from bus.topology import Topology
from tests.amqp_fakes import BUS_ID, HEADERS, FakeChannel, FakeMessage, FakePublisher, Journal, settled
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio

DELAYS = (5_000, 30_000, 300_000)
NAMES = BrokerNames("test")
COMMUNE = OrganId.parse("000.01.21.H99")
INBOX = NAMES.inbox(COMMUNE)
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)


# -- the decision ---------------------------------------------------------------------------------------


async def test_a_message_handled_is_acknowledged() -> None:
    assert decide(None) == ACK


async def test_poison_goes_to_the_dead_letter_queue_with_its_reason_never_back_to_its_queue() -> None:
    error = PoisonMessageError("not a bus message: missing x-bus-id")
    assert decide(error, attempt=1, delays=DELAYS) == Decision(Action.DEAD_LETTER, str(error))


@pytest.mark.parametrize(
    "error",
    [
        AxisRejectedError("400", "unknown recipient"),
        EnvelopeInvalidError([Problem("schema", "/edXML", "bad")]),
    ],
)
async def test_a_refusal_is_dead_lettered_at_once_whatever_the_attempts_left(error: Exception) -> None:
    decision = decide(error, attempt=2, delays=DELAYS)  # type: ignore[arg-type]
    assert decision == Decision(Action.DEAD_LETTER, f"{error} (attempt 2)")


@pytest.mark.parametrize(("attempt", "delay"), [(1, 5_000), (2, 30_000), (3, 300_000)])
async def test_a_temporary_failure_waits_in_the_next_back_off_tier(attempt: int, delay: int) -> None:
    error = AxisUnavailableError("timed out")
    assert decide(error, attempt=attempt, delays=DELAYS) == Decision(
        Action.RETRY, "timed out", delay_ms=delay, attempt=attempt
    )


async def test_when_the_tiers_are_used_up_it_is_dead_lettered() -> None:
    decision = decide(BrokerError("no confirm"), attempt=4, delays=DELAYS)
    assert decision == Decision(Action.DEAD_LETTER, "gave up after 4 attempts: no confirm")


# -- the header model and the parser --------------------------------------------------------------------


async def test_bus_headers_travel_as_amqp_headers_and_back() -> None:
    headers = BusHeaders(
        BUS_ID, "000.00.01.H99", "000.01.21.H99", "document", "000.00.01.H99,2026/11/20,12/STC"
    )
    assert to_amqp(headers) == HEADERS
    assert from_amqp(to_amqp(headers)) == headers


async def test_a_message_is_parsed_once_into_what_the_workers_read() -> None:
    raw = {**HEADERS, "x-bus-attempt": 2, "x-bus-replay": "7/abc", "x-trace-hops": 2, "x-death": [{}]}
    message = FakeMessage([], headers=raw)
    parsed = parse_message(message)  # type: ignore[arg-type]
    assert parsed.headers == from_amqp(HEADERS)
    assert (parsed.message_id, parsed.body, parsed.attempt) == (message.message_id, b"<edXML/>", 2)
    # Other headers travel on with every copy; the attempt count does not (a retry sets it afresh).
    assert parsed.carried == {"x-bus-replay": "7/abc", "x-trace-hops": 2}
    assert parsed.copy_headers() == {**HEADERS, "x-bus-replay": "7/abc", "x-trace-hops": 2}


@pytest.mark.parametrize(
    ("change", "message_id", "reason"),
    [
        ({"x-bus-id": None, "x-bus-kind": ""}, "m", "not a bus message: missing x-bus-id, x-bus-kind"),
        ({}, None, "not a bus message: missing message id"),
        ({}, "m" * 101, "not a bus message: malformed message id (over 100 characters)"),
        ({"x-bus-sender": b"\xff\xfe"}, "m", "not a bus message: malformed x-bus-sender (not UTF-8)"),
        ({"x-bus-recipient": "9" * 33}, "m", "malformed x-bus-recipient (over 32 characters)"),
        ({"x-bus-id": 42}, "m", "malformed x-bus-id (int, not text)"),
        ({"x-bus-document-id": "a\x00b"}, "m", "malformed x-bus-document-id (holds a NUL character)"),
        (
            {"x-bus-id": None, "x-bus-kind": 1.5},
            "m",
            "missing x-bus-id; malformed x-bus-kind (float, not text)",
        ),
        ({"x-bus-attempt": "two"}, "m", "not a bus message: malformed x-bus-attempt ('two')"),
        ({"x-bus-attempt": -1}, "m", "malformed x-bus-attempt (-1)"),
    ],
)
async def test_a_message_the_bus_did_not_write_is_poison_with_the_reason(
    change: dict[str, Any], message_id: str | None, reason: str
) -> None:
    headers = {k: v for k, v in {**HEADERS, **change}.items() if v is not None}
    with pytest.raises(PoisonMessageError) as refused:
        parse_message(FakeMessage([], message_id=message_id, headers=headers))  # type: ignore[arg-type]
    assert reason in str(refused.value)


# -- settling: the durable step, then the acknowledgement -----------------------------------------------


def _consumer(journal: Journal, *, down: bool = False) -> QueueConsumer[Any]:
    return QueueConsumer(FakeChannel(), FakePublisher(journal, down=down), name="test", pause_s=0)  # type: ignore[arg-type]


async def test_ack_is_only_an_acknowledgement() -> None:
    journal: Journal = []
    message = FakeMessage(journal)
    assert await _consumer(journal).settle(message, ACK, queue=INBOX)  # type: ignore[arg-type]
    assert journal == [("ack", message.message_id)]


async def test_a_dead_letter_is_confirmed_before_the_message_is_acknowledged() -> None:
    journal: Journal = []
    message, consumer = FakeMessage(journal), _consumer(journal)
    decision = Decision(Action.DEAD_LETTER, "refused")
    assert await consumer.settle(message, decision, queue=INBOX, headers={"x-a": 1})  # type: ignore[arg-type]
    assert journal == [
        ("dead_letter", INBOX, message.message_id, "refused", {"x-a": 1}),
        ("ack", message.message_id),
    ]
    assert consumer.dead_lettered == 1


async def test_a_retry_copy_is_confirmed_before_the_message_is_acknowledged() -> None:
    journal: Journal = []
    message = FakeMessage(journal)
    decision = Decision(Action.RETRY, "timed out", delay_ms=30_000, attempt=2)
    assert await _consumer(journal).settle(message, decision, queue="out", wait_ms=27_000)  # type: ignore[arg-type]
    assert journal == [
        ("retry", "out", 30_000, message.message_id, 2, {}, 27_000),
        ("ack", message.message_id),
    ]


@pytest.mark.parametrize(
    "decision", [Decision(Action.DEAD_LETTER, "refused"), Decision(Action.RETRY, "x", 5, 1)]
)
async def test_when_the_copy_is_not_confirmed_the_message_goes_back_to_its_queue(decision: Decision) -> None:
    journal: Journal = []
    message, consumer = FakeMessage(journal), _consumer(journal, down=True)
    assert not await consumer.settle(message, decision, queue=INBOX)  # type: ignore[arg-type]
    assert journal == [("nack", message.message_id, True)]  # never acknowledged: nothing is lost
    assert consumer.dead_lettered == 0


async def test_requeue_puts_it_back_and_a_failed_ack_is_not_an_error() -> None:
    journal: Journal = []
    again, lost_ack = FakeMessage(journal, message_id="again"), FakeMessage(journal, message_id="lost")
    lost_ack.fail_ack = True  # the channel died: the broker redelivers it
    consumer = _consumer(journal)
    assert not await consumer.settle(again, REQUEUE, queue=INBOX)  # type: ignore[arg-type]
    assert await consumer.settle(lost_ack, ACK, queue=INBOX)  # type: ignore[arg-type]
    assert journal == [("nack", "again", True)]


# -- the inbox worker -----------------------------------------------------------------------------------


class FakeInboxStore:
    """The inbox table: down for the first *failures* writes."""

    def __init__(self, journal: Journal, failures: int = 0) -> None:
        self.journal, self.failures, self.calls = journal, failures, 0
        self.items: list[InboxItem] = []

    async def store_inbox_many(self, items: Sequence[InboxItem]) -> list[bool]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("database is down")
        new = [item.message_id not in {i.message_id for i in self.items} for item in items]
        self.items += [item for item, fresh in zip(items, new, strict=True) if fresh]
        self.journal.append(("stored", *(item.message_id for item in items)))
        return new


def _topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")  # the commune is one of its agencies


async def _inbox(
    journal: Journal, store: FakeInboxStore, *, down: bool = False
) -> tuple[InboxWorker, FakeChannel]:
    channel = FakeChannel()
    worker = InboxWorker(
        channel,  # type: ignore[arg-type]
        _topology(),
        NAMES,
        store,
        FakePublisher(journal, down=down),
        store_retry_s=0.01,
        clock=lambda: NOW,
    )
    await worker.start()
    return worker, channel


async def test_inbox_writes_each_envelope_and_only_then_acknowledges_it() -> None:
    journal: Journal = []
    store = FakeInboxStore(journal)
    worker, channel = await _inbox(journal, store)
    first, repeat = FakeMessage(journal), FakeMessage(journal)  # a redelivery: the same message id
    await channel.queues[INBOX].deliver(first)
    await settled(first)
    await channel.queues[INBOX].deliver(repeat)
    await settled(repeat)
    await worker.stop()
    assert journal == [("stored", first.message_id), ("ack", first.message_id)] * 2
    [item] = store.items
    assert (item.agency, item.addressed_to, item.bus_id, item.sender) == (
        str(COMMUNE),
        "000.01.21.H99",
        BUS_ID,
        "000.00.01.H99",
    )
    assert (item.kind, item.document_id, item.received_at, item.body) == (
        "document",
        "000.00.01.H99,2026/11/20,12/STC",
        NOW,
        b"<edXML/>",
    )
    assert channel.queues[INBOX].consumers == {}  # stopped: the consumer is cancelled


async def test_inbox_holds_the_message_while_the_store_is_down() -> None:
    journal: Journal = []
    store = FakeInboxStore(journal, failures=3)
    worker, channel = await _inbox(journal, store)
    message = FakeMessage(journal)
    await channel.queues[INBOX].deliver(message)
    await settled(message)
    await worker.stop()
    assert store.calls == 4  # three failures waited out, neither acknowledged nor sent back meanwhile
    assert journal == [("stored", message.message_id), ("ack", message.message_id)]


async def test_inbox_dead_letters_a_poison_message_with_its_reason_and_writes_nothing() -> None:
    journal: Journal = []
    store = FakeInboxStore(journal)
    worker, channel = await _inbox(journal, store)
    poison = FakeMessage(journal, headers={"x-bus-id": BUS_ID, "x-bus-attempt": 1, "x-other": "kept"})
    await channel.queues[INBOX].deliver(poison)
    await worker.stop()
    reason = "not a bus message: missing x-bus-sender, x-bus-recipient, x-bus-kind, x-bus-document-id"
    assert journal == [
        ("dead_letter", INBOX, poison.message_id, reason, {"x-bus-id": BUS_ID, "x-other": "kept"}),
        ("ack", poison.message_id),
    ]
    assert store.items == []
    assert worker.dead_lettered == 1


async def test_inbox_sends_a_poison_message_back_when_it_cannot_dead_letter_it() -> None:
    journal: Journal = []
    worker, channel = await _inbox(journal, FakeInboxStore(journal), down=True)
    poison = FakeMessage(journal, message_id=None)
    await channel.queues[INBOX].deliver(poison)
    await worker.stop()
    assert journal == [("nack", None, True)]


async def test_stop_finishes_what_was_taken_before_it_returns() -> None:
    journal: Journal = []
    store = FakeInboxStore(journal, failures=2)
    worker, channel = await _inbox(journal, store)
    messages = [FakeMessage(journal, message_id=f"{BUS_ID}|{n}") for n in range(3)]
    for message in messages:
        await channel.queues[INBOX].deliver(message)
    await worker.stop(drain_s=5)
    assert sorted(m for kind, m in (e[:2] for e in journal) if kind == "ack") == [
        m.message_id for m in messages
    ]


# -- the dead-letter worker -----------------------------------------------------------------------------


class FakeDeadLetterStore:
    def __init__(self, journal: Journal, failures: int = 0) -> None:
        self.journal, self.failures, self.calls = journal, failures, 0
        self.items: list[Any] = []

    async def store_dead_letter(self, item: Any) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("database is down")
        self.items.append(item)
        self.journal.append(("stored", item.message_id))
        return True


async def test_dead_letters_are_kept_with_what_can_be_read_and_only_then_acknowledged() -> None:
    journal: Journal = []
    store = FakeDeadLetterStore(journal, failures=2)
    channel = FakeChannel()
    worker = DeadLetterWorker(channel, NAMES, store, store_retry_s=0.01, clock=lambda: NOW)  # type: ignore[arg-type]
    await worker.start()
    headers = {**HEADERS, "x-bus-recipient": "9" * 100, "x-bus-reason": "refused", "x-bus-attempt": 3}
    message = FakeMessage(journal, headers=headers)
    await channel.queues[NAMES.dead_letter_queue].deliver(message)
    await settled(message)
    await worker.stop()
    assert journal == [("stored", message.message_id), ("ack", message.message_id)]
    [item] = store.items
    assert (item.reason, item.bus_id, item.recipient) == ("refused", BUS_ID, None)  # too long to be the bus's
    assert item.headers == {**HEADERS, "x-bus-recipient": "9" * 100}  # what a replay puts back
    assert store.calls == 3


async def test_a_worker_without_a_publisher_never_makes_copies() -> None:
    worker = DeadLetterWorker(FakeChannel(), NAMES, FakeDeadLetterStore([]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no publisher"):
        await worker.settle(FakeMessage([]), Decision(Action.DEAD_LETTER, "x"), queue="q")  # type: ignore[arg-type]
