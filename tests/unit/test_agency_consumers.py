"""What the AMQP agencies' consumers decide for each message, on in-memory fakes (no broker): who sent
it, the answer (the HTTP API's codes, from its own table), the reply before the acknowledgement, the
acknowledgement rules on the timeline, and the copy into an agency's delivery queue. The same paths run
on the real broker in tests/integration/test_amqp_agencies.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pytest

from adapters.http.errors import api_error
from adapters.rabbitmq.agency_acks import AgencyAcks
from adapters.rabbitmq.agency_deliveries import AgencyDeliveries
from adapters.rabbitmq.agency_intake import AgencyIntake
from adapters.rabbitmq.agency_replies import Replies, agencies_by_user
from adapters.rabbitmq.headers import BODY_SHA256_HEADER, BODY_SIZE_HEADER
from adapters.rabbitmq.names import BrokerNames
from bus.delivery import AcceptedDocument, DeliveryRow, DeliveryState, TimelineEvent, may_replace
from bus.errors import (
    BrokerError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    MalformedXmlError,
    Problem,
    RevocationUnknownError,
    StoreError,
    StoreUnavailableError,
)
from bus.intake import Accepted
from bus.organ_id import OrganId
from bus.routing import route
from bus.settings import load_topology
from bus.topology import AgencyTransport, Topology
from entrypoints.amqp_agencies import http_inboxes, refusal_of
from tests.amqp_fakes import BUS_ID, HEADERS, FakeChannel, FakeMessage, FakePublisher, Journal, settled
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio

NAMES = BrokerNames("test")
SENDER = OrganId.parse("000.00.01.H99")  # Sở Nội vụ, over AMQP
COMMUNE = OrganId.parse("000.03.21.H99")  # xã Xuân Lãnh, over AMQP; former code 000.04.21.H99
DISTRICT = OrganId.parse("000.00.21.H99")  # over HTTP
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
REPLY_TO = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAA0lgAAABBrDv3N.tzZoTtmZh9aofga01nh"


def _topology() -> Topology:
    topology = load_topology(ROOT / "config" / "example-province.toml")
    amqp = {SENDER, COMMUNE}
    agencies = tuple(
        a.model_copy(update={"transport": AgencyTransport.AMQP}) if a.organ_id in amqp else a
        for a in topology.agencies
    )
    return Topology(province=topology.province, node=topology.node, agencies=agencies)


TOPOLOGY = _topology()
USERS = agencies_by_user(TOPOLOGY, NAMES)


class AgencyMessage(FakeMessage):
    """A message as an agency's client publishes it: the broker-checked user, reply-to, correlation."""

    def __init__(
        self,
        journal: Journal,
        *,
        body: bytes = b"<edXML/>",
        user_id: str | None = NAMES.agency_user(SENDER),
        reply_to: str | None = REPLY_TO,
        redelivered: bool = False,
    ) -> None:
        super().__init__(journal, body=body, message_id=None, headers={})
        self.user_id, self.reply_to, self.redelivered = user_id, reply_to, redelivered
        self.correlation_id = "c-1"


class FakeReplies:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def reply(self, to: str | None, correlation_id: str | None, answer: Mapping[str, Any]) -> bool:
        self.journal.append(("reply", to, correlation_id, dict(answer)))
        return True


class FakeIntake:
    """Accepts from anyone, or raises *error*."""

    def __init__(self, journal: Journal, error: Exception | None = None) -> None:
        self.journal, self.error = journal, error

    async def accept(self, body: bytes, *, sender: OrganId) -> Accepted:
        self.journal.append(("accept", str(sender)))
        if self.error is not None:
            raise self.error
        destinations = (route(TOPOLOGY, COMMUNE), route(TOPOLOGY, DISTRICT))
        return Accepted(BUS_ID, "doc-1", destinations, "document", str(sender))


class FakeRecords:
    """What the store holds of an earlier acceptance."""

    def __init__(self, body: bytes) -> None:
        self.document_ = AcceptedDocument(
            BUS_ID, "document", str(SENDER), "doc-1", 0, "1/X", "s", NOW, hashlib.sha256(body).hexdigest()
        )

    async def document(self, bus_id: str) -> AcceptedDocument | None:
        return self.document_ if bus_id == BUS_ID else None

    async def deliveries(self, bus_id: str) -> list[DeliveryRow]:
        return [DeliveryRow(str(COMMUNE), "local", DeliveryState.QUEUED, NOW)]


def _intake(journal: Journal, error: Exception | None = None, *, accepted_body: bytes = b"") -> AgencyIntake:
    return AgencyIntake(
        FakeChannel(),  # type: ignore[arg-type]
        NAMES,
        USERS,
        FakeIntake(journal, error),
        FakeRecords(accepted_body),
        FakeReplies(journal),
        refusal_of,
    )


# -- the intake -----------------------------------------------------------------------------------------


async def test_an_accepted_envelope_is_answered_202_before_the_message_is_acknowledged() -> None:
    journal: Journal = []
    message = AgencyMessage(journal)
    await _intake(journal)._handle(message)  # type: ignore[arg-type]
    assert journal == [
        ("accept", str(SENDER)),  # the sender is the broker user's agency, nothing the message says
        (
            "reply",
            REPLY_TO,
            "c-1",
            {
                "status": 202,
                "bus_id": BUS_ID,
                "document_id": "doc-1",
                "recipients": [
                    {"organ_id": str(COMMUNE), "route": "local"},
                    {"organ_id": str(DISTRICT), "route": "local"},
                ],
            },
        ),
        ("ack", None),
    ]


@pytest.mark.parametrize(
    ("user_id", "code"),
    [
        (None, "unauthenticated"),
        ("", "unauthenticated"),
        ("guest", "unknown-agency"),
        (NAMES.agency_user(DISTRICT), "unknown-agency"),
    ],  # an HTTP agency has no broker identity
)
async def test_a_message_without_an_agency_user_is_refused_and_reaches_no_intake(
    user_id: str | None, code: str
) -> None:
    journal: Journal = []
    await _intake(journal)._handle(AgencyMessage(journal, user_id=user_id))  # type: ignore[arg-type]
    [reply, ack] = journal
    assert reply[3]["status"] == 401
    assert reply[3]["error"]["code"] == code
    assert ack == ("ack", None)


@pytest.mark.parametrize(
    "error",
    [
        ForgedSenderError("From/OrganId 000.00.02.H99 is not your agency 000.00.01.H99"),
        EnvelopeInvalidError([Problem("schema", "/edXML/edXMLEnvelope", "missing Subject", line=3)]),
        MalformedXmlError("not well-formed (line 1)"),
        DuplicateEnvelopeError(BUS_ID, "already accepted"),
        BrokerError("no confirm"),
        RevocationUnknownError("the CRL of CA X is stale"),
    ],
)
async def test_a_refusal_carries_the_http_apis_status_code_and_message(error: Exception) -> None:
    journal: Journal = []
    await _intake(journal, error)._handle(AgencyMessage(journal))  # type: ignore[arg-type]
    http = api_error(error)
    assert http is not None
    [_, reply, ack] = journal
    assert reply[3] == {
        "status": http.status,
        "error": {"code": http.code, "message": http.message, **http.extra},
    }
    assert ack == ("ack", None)  # answered: the agency sends again if it was not accepted


async def test_a_store_failure_during_intake_is_outcome_unknown_as_over_http() -> None:
    journal: Journal = []
    await _intake(journal, StoreUnavailableError("connection refused"))._handle(AgencyMessage(journal))  # type: ignore[arg-type]
    assert journal[1][3]["status"] == 503
    assert journal[1][3]["error"]["code"] == "outcome-unknown"


async def test_an_unforeseen_failure_is_a_500_that_says_not_accepted() -> None:
    journal: Journal = []
    await _intake(journal, RuntimeError("bug"))._handle(AgencyMessage(journal))  # type: ignore[arg-type]
    assert journal[1][3]["error"] == {
        "code": "internal",
        "message": "internal error; the request had no effect unless a 202 was sent",
    }


async def test_a_redelivery_of_an_envelope_already_accepted_is_answered_as_accepted() -> None:
    """The node died after the intake and before the acknowledgement: its sender sent it once."""
    journal: Journal = []
    body = b"<edXML>accepted</edXML>"
    intake = _intake(journal, DuplicateEnvelopeError(BUS_ID, "already accepted"), accepted_body=body)
    await intake._handle(AgencyMessage(journal, body=body, redelivered=True))  # type: ignore[arg-type]
    [reply] = [entry for entry in journal if entry[0] == "reply"]
    assert reply[3] == {
        "status": 202,
        "bus_id": BUS_ID,
        "document_id": "doc-1",
        "recipients": [{"organ_id": str(COMMUNE), "route": "local"}],
    }


@pytest.mark.parametrize(
    ("redelivered", "accepted_body"), [(True, b"<edXML>other</edXML>"), (False, b"<edXML/>")]
)
async def test_otherwise_a_duplicate_is_a_duplicate(redelivered: bool, accepted_body: bytes) -> None:
    journal: Journal = []
    intake = _intake(journal, DuplicateEnvelopeError(BUS_ID, "already accepted"), accepted_body=accepted_body)
    await intake._handle(AgencyMessage(journal, body=b"<edXML/>", redelivered=redelivered))  # type: ignore[arg-type]
    [reply] = [entry for entry in journal if entry[0] == "reply"]
    assert reply[3]["status"] == 409
    assert reply[3]["error"]["bus_id"] == BUS_ID
    # Delivered again: acknowledged before the reply (adapters/rabbitmq/agency_replies.answer_then_ack).
    steps = [entry[0] for entry in journal if entry[0] in ("reply", "ack")]
    assert steps == (["ack", "reply"] if redelivered else ["reply", "ack"])


class FakeExchange:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def publish(self, message: Any, *, routing_key: str, **options: Any) -> None:
        self.journal.append(("publish", routing_key, message.correlation_id, json.loads(message.body)))


class FakeReplyChannel:
    def __init__(self, journal: Journal) -> None:
        self.default_exchange = FakeExchange(journal)


@pytest.mark.parametrize(
    ("reply_to", "sent"),
    [
        (REPLY_TO, True),
        (None, False),
        ("test.agency.000.03.21.H99", False),  # another agency's queue: the bus would deliver into it
        ("amq.rabbitmq.reply-to", False),
    ],
)
async def test_replies_go_to_a_direct_reply_to_address_only(reply_to: str | None, sent: bool) -> None:
    journal: Journal = []
    replies = Replies(FakeReplyChannel(journal))  # type: ignore[arg-type]
    assert await replies.reply(reply_to, "c-9", {"status": 202}) is sent
    assert journal == ([("publish", reply_to, "c-9", {"status": 202})] if sent else [])


# -- acknowledgements -----------------------------------------------------------------------------------


T = TypeVar("T")


class FakeAckStore:
    """Deliveries and their timelines: events unique by key, a delivery moving forward only; down for
    the first *failures* calls."""

    def __init__(
        self, journal: Journal, *, state: DeliveryState = DeliveryState.QUEUED, failures: int = 0
    ) -> None:
        self.journal, self.failures = journal, failures
        self.rows = {(BUS_ID, "000.04.21.H99"): DeliveryRow("000.04.21.H99", "local", state, NOW)}
        self.events: dict[str, TimelineEvent] = {}

    def _call(self) -> None:
        if self.failures:
            self.failures -= 1
            self.journal.append(("store_down",))
            raise StoreUnavailableError("connection refused")

    async def deliveries(self, bus_id: str) -> list[DeliveryRow]:
        self._call()
        return [row for (b, _), row in self.rows.items() if b == bus_id]

    async def record(self, event: TimelineEvent, *, key: str) -> bool:
        self._call()
        if key in self.events:
            return False
        self.events[key] = event
        self.journal.append(("event", key, event.state.value, event.detail))
        row = self.rows[(event.bus_id, str(event.recipient))]
        if may_replace(row.state, event.state):
            self.rows[(event.bus_id, str(event.recipient))] = DeliveryRow(
                row.recipient, row.route, event.state, event.at
            )
        return True

    async def record_planned(
        self,
        bus_id: str,
        plan: Callable[[list[DeliveryRow]], tuple[T, Sequence[tuple[TimelineEvent, str]]] | None],
    ) -> tuple[T, list[bool]] | None:
        planned = plan(await self.deliveries(bus_id))
        if planned is None:
            return None
        value, keyed = planned
        return value, [await self.record(event, key=key) for event, key in keyed]

    @property
    def state(self) -> DeliveryState:
        return self.rows[(BUS_ID, "000.04.21.H99")].state


def _acks(journal: Journal, store: FakeAckStore) -> AgencyAcks:
    return AgencyAcks(
        FakeChannel(),  # type: ignore[arg-type]
        NAMES,
        USERS,
        store,
        FakeReplies(journal),
        refusal_of,
        max_reason_chars=1000,
        store_retry_s=0,
        clock=lambda: NOW,
    )


def _ack(journal: Journal, state: str, reason: str | None = None, **fields: Any) -> AgencyMessage:
    body = json.dumps({"bus_id": BUS_ID, "state": state, "reason": reason, **fields}).encode()
    return AgencyMessage(journal, body=body, user_id=NAMES.agency_user(COMMUNE))


async def _answers(acks: AgencyAcks, *messages: AgencyMessage) -> list[dict[str, Any]]:
    for message in messages:
        await acks._handle(message)  # type: ignore[arg-type]
    return [entry[3] for entry in messages[0].journal if entry[0] == "reply"]


async def test_acknowledgements_land_on_the_timeline_first_fetched_then_processing_then_done() -> None:
    journal: Journal = []
    store = FakeAckStore(journal)
    answers = await _answers(_acks(journal, store), _ack(journal, "processing"), _ack(journal, "done"))
    mine = f"{BUS_ID}|000.04.21.H99"  # the delivery's message id: addressed to the former code
    assert [e for e in journal if e[0] in ("event", "ack")] == [
        ("event", f"{mine}|fetched", "fetched", None),
        ("event", f"{mine}|ack|processing", "processing", None),
        ("ack", None),
        ("event", f"{mine}|ack|final", "done", None),
        ("ack", None),
    ]
    assert [a["status"] for a in answers] == [200, 200]
    assert answers[1] == {"status": 200, "bus_id": BUS_ID, "recipient": "000.04.21.H99", "state": "done"}
    assert store.state is DeliveryState.DONE


async def test_done_and_fail_are_final_and_the_same_one_again_is_a_harmless_repeat() -> None:
    journal: Journal = []
    store = FakeAckStore(journal)
    acks = _acks(journal, store)
    answers = await _answers(
        acks,
        _ack(journal, "fail", "unreadable attachment"),
        _ack(journal, "fail", "unreadable attachment"),
        _ack(journal, "done"),
        _ack(journal, "processing"),
    )
    assert [a["status"] for a in answers] == [200, 200, 409, 409]
    assert answers[2]["error"] == {
        "code": "already-final",
        "message": f"envelope {BUS_ID} was already acknowledged as fail",
    }
    assert store.state is DeliveryState.FAIL
    assert [e[2] for e in journal if e[0] == "event"] == ["fetched", "fail"]  # nothing after the final one


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({"bus_id": "x", "state": "done"}).encode(), "bus_id must be the bus id"),
        (json.dumps({"bus_id": BUS_ID, "state": "read"}).encode(), '"processing" | "done" | "fail"'),
        (json.dumps({"bus_id": BUS_ID, "state": "fail"}).encode(), "needs a reason"),
        (json.dumps({"bus_id": BUS_ID, "state": "fail", "reason": "r" * 1001}).encode(), "at most 1000"),
        (b" " * (64 * 1024 + 1), "at most 65536"),
    ],
)
async def test_a_bad_acknowledgement_is_refused_and_writes_nothing(body: bytes, message: str) -> None:
    journal: Journal = []
    store = FakeAckStore(journal)
    [answer] = await _answers(
        _acks(journal, store), AgencyMessage(journal, body=body, user_id=NAMES.agency_user(COMMUNE))
    )
    assert answer["status"] == 400
    assert answer["error"]["code"] == "bad-acknowledgement"
    assert message in answer["error"]["message"]
    assert store.events == {}


@pytest.mark.parametrize(
    ("user", "state"),
    [
        (SENDER, DeliveryState.QUEUED),  # the sender: not its delivery
        (COMMUNE, DeliveryState.ACCEPTED),  # not in its queue yet
    ],
)
async def test_an_envelope_not_delivered_to_the_agency_is_not_found(
    user: OrganId, state: DeliveryState
) -> None:
    journal: Journal = []
    store = FakeAckStore(journal, state=state)
    message = _ack(journal, "done")
    message.user_id = NAMES.agency_user(user)
    [answer] = await _answers(_acks(journal, store), message)
    assert answer["status"] == 404
    assert answer["error"]["code"] == "not-found"
    assert store.events == {}


async def test_while_the_store_is_down_the_acknowledgement_is_held_then_written() -> None:
    journal: Journal = []
    store = FakeAckStore(journal, failures=2)
    [answer] = await _answers(_acks(journal, store), _ack(journal, "done"))
    assert answer["status"] == 200
    kinds = [e[0] for e in journal]
    assert kinds == ["store_down", "store_down", "event", "event", "reply", "ack"]  # acknowledged last


# -- deliveries to an agency's queue --------------------------------------------------------------------


class FakeQueuedStore:
    def __init__(
        self, journal: Journal, *, failures: int = 0, known: bool = True, bodies: Mapping[str, bytes] = {}
    ) -> None:
        self.journal, self.failures, self.known, self.bodies = journal, failures, known, dict(bodies)

    async def read_body(self, sha256: str) -> bytes | None:
        self.journal.append(("read_body", sha256))
        return self.bodies.get(sha256)

    async def record(self, event: TimelineEvent, *, key: str) -> bool:
        if self.failures:
            self.failures -= 1
            self.journal.append(("store_down",))
            raise StoreUnavailableError("connection refused") if self.known else StoreError("foreign key")
        self.journal.append(("event", key, event.state.value))
        return True

    async def document(self, bus_id: str) -> AcceptedDocument | None:
        return FakeRecords(b"").document_ if self.known else None


async def _deliveries(
    journal: Journal, store: FakeQueuedStore, *, down: bool = False, publisher: FakePublisher | None = None
) -> tuple[AgencyDeliveries, FakeChannel]:
    channel = FakeChannel()
    worker = AgencyDeliveries(
        channel,  # type: ignore[arg-type]
        TOPOLOGY,
        NAMES,
        store,
        publisher or FakePublisher(journal, down=down),
        store_retry_s=0,
        clock=lambda: NOW,
    )
    await worker.start()
    return worker, channel


async def test_only_the_amqp_agencies_inbox_queues_are_moved_to_their_delivery_queues() -> None:
    _, channel = await _deliveries([], FakeQueuedStore([]))
    assert sorted(channel.queues) == sorted(NAMES.inbox(code) for code in (SENDER, COMMUNE))
    # ... and the inbox worker, which writes the HTTP inbox, is given the others only.
    inboxes = {a.organ_id for a in http_inboxes(TOPOLOGY).agencies}
    assert inboxes == {a.organ_id for a in TOPOLOGY.agencies} - {SENDER, COMMUNE}


async def test_a_delivery_is_queued_then_copied_to_the_agency_queue_then_acknowledged() -> None:
    journal: Journal = []
    _, channel = await _deliveries(journal, FakeQueuedStore(journal))
    headers = {**HEADERS, "x-bus-recipient": "000.04.21.H99", "x-bus-replay": "7/x"}
    message = FakeMessage(journal, message_id=f"{BUS_ID}|000.04.21.H99", headers=headers)
    await channel.queues[NAMES.inbox(COMMUNE)].deliver(message)
    await settled(message)
    bus_headers = {k: v for k, v in headers.items() if k != "x-bus-replay"}  # the five bus headers only
    assert journal == [
        ("event", f"{BUS_ID}|000.04.21.H99|queued", "queued"),  # before the agency can acknowledge it
        ("to_queue", NAMES.agency_queue(COMMUNE), message.message_id, bus_headers),
        ("ack", message.message_id),
    ]


async def test_when_the_copy_fails_the_message_goes_back_to_its_queue() -> None:
    journal: Journal = []
    worker, channel = await _deliveries(journal, FakeQueuedStore(journal), down=True)
    message = FakeMessage(journal)
    await channel.queues[NAMES.inbox(COMMUNE)].deliver(message)
    await settled(message)
    assert journal == [
        ("event", f"{BUS_ID}|000.01.21.H99|queued", "queued"),
        ("nack", message.message_id, True),
    ]
    assert worker.delivered == 0


SHA = "ab" * 32
BY_REFERENCE = {**HEADERS, BODY_SHA256_HEADER: SHA, BODY_SIZE_HEADER: 9}


async def test_an_envelope_in_the_body_store_goes_to_the_agency_whole() -> None:
    journal: Journal = []
    publisher = BodyPublisher(journal)
    store = FakeQueuedStore(journal, bodies={SHA: b"<edXML/>!"})
    _, channel = await _deliveries(journal, store, publisher=publisher)
    message = FakeMessage(journal, body=b"", headers=BY_REFERENCE)
    await channel.queues[NAMES.inbox(COMMUNE)].deliver(message)
    await settled(message)
    assert journal == [
        ("read_body", SHA),
        ("event", f"{BUS_ID}|000.01.21.H99|queued", "queued"),
        ("to_queue", NAMES.agency_queue(COMMUNE), message.message_id, HEADERS),  # no reference: the body
        ("ack", message.message_id),
    ]
    assert publisher.bodies == [b"<edXML/>!"]


class BodyPublisher(FakePublisher):
    """Also keeps the bodies it is given to publish into a queue."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.bodies: list[bytes] = []

    async def to_queue(self, queue: str, body: bytes, **kwargs: Any) -> None:
        self.bodies.append(body)
        await super().to_queue(queue, body, **kwargs)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (
            BY_REFERENCE,
            f"the envelope it names ({SHA}) is not in the body store: this copy cannot be delivered",
        ),
        (HEADERS, "the message carries no envelope: this copy cannot be delivered"),
    ],
)
async def test_an_envelope_nobody_has_is_dead_lettered_never_forwarded_empty(
    headers: dict[str, Any], reason: str
) -> None:
    journal: Journal = []
    _, channel = await _deliveries(journal, FakeQueuedStore(journal))
    message = FakeMessage(journal, body=b"", headers=headers)
    await channel.queues[NAMES.inbox(COMMUNE)].deliver(message)
    await settled(message)
    dead = [e for e in journal if e[0] == "dead_letter"]
    assert [(e[1], e[3]) for e in dead] == [(NAMES.inbox(COMMUNE), reason)]
    assert not [e for e in journal if e[0] in ("to_queue", "event")]


async def test_a_message_that_is_not_the_buses_is_dead_lettered_not_copied() -> None:
    journal: Journal = []
    _, channel = await _deliveries(journal, FakeQueuedStore(journal))
    message = FakeMessage(journal, headers={"x-bus-id": BUS_ID})
    await channel.queues[NAMES.inbox(COMMUNE)].deliver(message)
    await settled(message)
    assert [e[0] for e in journal] == ["dead_letter", "ack"]
    assert journal[0][1] == NAMES.inbox(COMMUNE)


@pytest.mark.parametrize("known", [True, False])
async def test_while_the_store_fails_the_delivery_is_held_until_its_event_is_written(known: bool) -> None:
    journal: Journal = []
    _, channel = await _deliveries(journal, FakeQueuedStore(journal, failures=2, known=known))
    message = FakeMessage(journal)
    await channel.queues[NAMES.inbox(COMMUNE)].deliver(message)
    await settled(message)
    kinds = [e[0] for e in journal]
    if known:
        assert kinds == ["store_down", "store_down", "event", "to_queue", "ack"]
    else:  # a document this store never recorded: delivered, with no timeline to write on
        assert kinds == ["store_down", "to_queue", "ack"]
