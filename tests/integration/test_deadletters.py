"""Dead letters on the real broker and both databases: kept once with their reason, listed, replayed."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from adapters.rabbitmq import BrokerNames, Publisher
from adapters.rabbitmq.deadletters import DeadLetterWorker
from adapters.rabbitmq.headers import REPLAY_HEADER
from adapters.rabbitmq.inbox import InboxWorker
from adapters.store import StatusStore
from bus.delivery import AcceptedDocument, DeadLetter, DeliveryState
from bus.organ_id import OrganId
from bus.replay import ReplayOutcome, replay
from bus.topology import Topology
from entrypoints.cli_operator import add_commands
from tests.integration.conftest import fresh_database, write_config

pytestmark = pytest.mark.asyncio
T = TypeVar("T")

COMMUNE = OrganId.parse("000.01.21.H99")
REASON = "Chữ ký không hợp lệ: DigestValue does not match"


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest_asyncio.fixture
async def store(database_url: str) -> AsyncIterator[StatusStore]:
    store = StatusStore.connect(database_url)
    await store.create_schema()
    yield store
    await store.close()


class Workers:
    """Dead-letter workers, each on its own channel; killing one closes its channel (a crash)."""

    def __init__(self, connection: AbstractRobustConnection, names: BrokerNames) -> None:
        self._connection, self._names = connection, names
        self._running: list[tuple[DeadLetterWorker, AbstractChannel]] = []

    async def start(self, store: Any) -> DeadLetterWorker:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=10)
        worker = DeadLetterWorker(channel, self._names, store, store_retry_s=0.05)
        await worker.start()
        self._running.append((worker, channel))
        return worker

    async def kill(self, worker: DeadLetterWorker, *, drain_s: float = 0) -> None:
        """Stop, by default without waiting for anything in hand, and close the channel: what is
        unacknowledged goes back to the queue."""
        [channel] = [c for w, c in self._running if w is worker]
        self._running.remove((worker, channel))
        await worker.stop(drain_s=drain_s)
        await channel.close()

    async def stop_all(self) -> None:
        for worker, channel in self._running:
            await worker.stop(drain_s=1)
            await channel.close()


@pytest_asyncio.fixture
async def workers(connection: AbstractRobustConnection, names: BrokerNames) -> AsyncIterator[Workers]:
    running = Workers(connection, names)
    yield running
    await running.stop_all()


class FakeCrashAfterWrite:
    """Writes to the real store, then hangs as if the process died before acknowledging."""

    def __init__(self, store: StatusStore) -> None:
        self.store, self.written = store, asyncio.Event()

    async def store_dead_letter(self, item: DeadLetter) -> bool:
        await self.store.store_dead_letter(item)
        self.written.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class FakeStoreDown:
    """The store is unreachable for the first *failures* writes, then it is the real one again."""

    def __init__(self, store: StatusStore, failures: int) -> None:
        self.store, self.failures, self.calls, self.results = store, failures, 0, list[bool]()

    async def store_dead_letter(self, item: DeadLetter) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("database is down")
        self.results.append(await self.store.store_dead_letter(item))
        return self.results[-1]


async def until(check: Callable[[], Awaitable[T] | T], within_s: float = 10.0) -> T:
    """*check*'s first truthy result, polled until *within_s* runs out."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"still {result!r} after {within_s} s")
        await asyncio.sleep(0.05)


# Queues are looked at with basic.get: a quorum queue's message count (queue.declare-ok) lags behind.


async def is_empty(channel: AbstractChannel, queue: str) -> bool:
    """Nothing to get from *queue*; a message found is put back."""
    message = await (await channel.get_queue(queue, ensure=False)).get(fail=False, timeout=5)
    if message is not None:
        await message.nack(requeue=True)
    return message is None


async def holds_a_message(channel: AbstractChannel, queue: str) -> bool:
    return not await is_empty(channel, queue)


async def take_all(channel: AbstractChannel, queue: str) -> list[bytes]:
    """The bodies of every message in *queue*, taken off it."""
    bodies = []
    source = await channel.get_queue(queue, ensure=False)
    while (message := await source.get(fail=False, timeout=5)) is not None:
        await message.ack()
        bodies.append(message.body)
    return bodies


async def accepted(store: StatusStore) -> AcceptedDocument:
    """A document the bus accepted for the commune, as the intake records it."""
    doc = AcceptedDocument(
        bus_id=str(uuid.uuid4()),
        kind="document",
        sender="000.00.00.H99",
        document_id=f"000.00.00.H99,2026/11/20,{uuid.uuid4().hex[:6]}/UBND-VP",
        business_type=0,
        code="1234/UBND-VP",
        subject="V/v hàng lỗi",
        accepted_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        envelope_sha256="0" * 64,
    )
    assert await store.begin_accept(doc, [(str(COMMUNE), "local")]) is None
    await store.confirm_accept(doc, [str(COMMUNE)])
    return doc


def delivery_headers(doc: AcceptedDocument) -> dict[str, str | int | bool]:
    return {
        "x-bus-id": doc.bus_id,
        "x-bus-sender": doc.sender,
        "x-bus-recipient": str(COMMUNE),
        "x-bus-kind": doc.kind,
        "x-bus-document-id": doc.document_id,
        "x-trace-hops": 2,
        "x-signed": True,
    }


async def delivered_then_rejected(
    channel: AbstractChannel, names: BrokerNames, doc: AcceptedDocument
) -> None:
    """The commune's system-side consumer rejects the delivery: the broker dead-letters it. (Published
    straight to the inbox: the headers a delivery carries, and two more that must travel with it.)"""
    body = "<edXML>Ủy ban nhân dân</edXML>".encode()
    await Publisher(channel, names).to_queue(
        names.inbox(COMMUNE), body, message_id=f"{doc.bus_id}|{COMMUNE}", headers=delivery_headers(doc)
    )
    inbox = await channel.get_queue(names.inbox(COMMUNE), ensure=False)
    message = await inbox.get(timeout=5)
    assert message is not None
    await message.reject(requeue=False)


async def state(store: StatusStore, doc: AcceptedDocument) -> DeliveryState:
    [delivery] = await store.deliveries(doc.bus_id)
    return delivery.state


# -- into the store ------------------------------------------------------------------------------------


async def test_bus_dead_letter_is_kept_with_its_reason_and_on_the_timeline(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    doc = await accepted(store)
    await workers.start(store)
    await Publisher(channel, names).dead_letter(
        b"<bad/>",
        message_id=f"{doc.bus_id}|{COMMUNE}",
        reason=REASON,
        source_queue=names.inbox(COMMUNE),
        headers={**delivery_headers(doc), "x-bus-attempt": 3},
    )
    [item] = await until(store.dead_letters)
    assert (item.reason, item.source_queue) == (REASON, names.inbox(COMMUNE))
    assert (item.bus_id, item.recipient, item.sender) == (doc.bus_id, str(COMMUNE), doc.sender)
    assert (item.document_id, item.kind) == (doc.document_id, "document")
    assert len(item.dead_key) == 32  # the x-bus-dead-id the publisher gave this dead-lettering
    assert item.headers == delivery_headers(doc)  # neither the reason, the source nor the attempt
    assert item.body is None  # listings carry no body
    full = await store.dead_letter(item.id)
    assert full is not None
    assert full.body == b"<bad/>"
    last = (await store.timeline(doc.bus_id))[-1]
    assert (last.state, last.recipient, last.detail) == (DeliveryState.DEAD_LETTERED, str(COMMUNE), REASON)
    assert await state(store, doc) is DeliveryState.DEAD_LETTERED
    assert await is_empty(channel, names.dead_letter_queue)


async def test_broker_dead_letter_is_kept_with_the_x_death_reason(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    doc = await accepted(store)
    await delivered_then_rejected(channel, names, doc)
    await workers.start(store)
    [item] = await until(store.dead_letters)
    assert item.reason == f"broker dead-lettered from {names.inbox(COMMUNE)}: rejected"
    assert item.source_queue == names.inbox(COMMUNE)
    assert item.message_id == f"{doc.bus_id}|{COMMUNE}"
    assert item.dead_key.startswith("x-death:")
    assert item.headers == delivery_headers(doc)  # x-death, x-first-death-*, x-delivery-count dropped
    assert [e.state for e in await store.timeline(doc.bus_id)] == [
        DeliveryState.ACCEPTED,
        DeliveryState.DEAD_LETTERED,
    ]


async def test_a_worker_killed_after_writing_does_not_keep_the_message_twice(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    doc = await accepted(store)
    await Publisher(channel, names).dead_letter(
        b"<bad/>",
        message_id="m1",
        reason=REASON,
        source_queue=names.inbox(COMMUNE),
        headers=delivery_headers(doc),
    )
    crashing = FakeCrashAfterWrite(store)
    first = await workers.start(crashing)
    await asyncio.wait_for(crashing.written.wait(), 10)
    await workers.kill(first)  # written, never acknowledged: the broker gives the message back
    assert await until(lambda: holds_a_message(channel, names.dead_letter_queue))
    recording = FakeStoreDown(store, failures=0)
    second = await workers.start(recording)
    assert await until(lambda: recording.results) == [False]  # a repeat: nothing new
    await workers.kill(second, drain_s=5)  # lets it finish what it holds
    assert await is_empty(channel, names.dead_letter_queue)  # the second worker acknowledged it
    assert len(await store.dead_letters()) == 1
    states = [e.state for e in await store.timeline(doc.bus_id)]
    assert states.count(DeliveryState.DEAD_LETTERED) == 1


async def test_while_the_store_is_down_the_message_is_held_not_acknowledged(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    await Publisher(channel, names).dead_letter(
        b"<x/>", message_id="m2", reason=REASON, source_queue=names.outbound_queue
    )
    down = FakeStoreDown(store, failures=10**6)
    first = await workers.start(down)
    await until(lambda: down.calls >= 3)  # retried with back-off, still held
    await workers.kill(first)
    assert await until(lambda: holds_a_message(channel, names.dead_letter_queue))  # not lost
    flaky = FakeStoreDown(store, failures=2)
    await workers.start(flaky)
    [item] = await until(store.dead_letters)
    assert (item.message_id, flaky.calls) == ("m2", 3)


async def test_a_message_without_usable_headers_is_still_kept(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    dlx = await channel.get_exchange(names.dead_letter_exchange, ensure=False)
    odd = {
        "x-bus-recipient": "9" * 100,
        "x-bus-reason": "NUL\x00 in a reason",
        "x-rate": 0.5,
        "x-nul": "a\x00",
    }
    await dlx.publish(aio_pika.Message(b"\xff\xfe", headers=odd), routing_key="")
    await dlx.publish(aio_pika.Message(b"<no headers/>"), routing_key="")
    await workers.start(store)
    bare, odd_item = await until(lambda: _two(store))  # newest first
    assert (bare.source_queue, bare.bus_id, bare.headers) == ("", None, {})
    assert bare.reason.startswith("dead-lettered without a reason")
    assert (odd_item.reason, odd_item.recipient) == ("NUL in a reason", None)  # PostgreSQL text has no NUL
    assert odd_item.headers == {"x-bus-recipient": "9" * 100, "x-nul": "a\x00"}  # as it was, but no float
    results = await replay(store, Publisher(channel, names), [bare.id], dt.datetime.now(dt.UTC))
    assert [(r.outcome, r.error) for r in results] == [
        (ReplayOutcome.FAILED, "nothing says which queue it came from: it cannot be replayed")
    ]


async def _two(store: StatusStore) -> list[DeadLetter] | None:
    items = await store.dead_letters()
    return items if len(items) == 2 else None


# -- replay ------------------------------------------------------------------------------------------


async def test_replay_puts_the_message_back_and_the_delivery_moves_on(
    connection: AbstractRobustConnection,
    channel: AbstractChannel,
    names: BrokerNames,
    topology: Topology,
    store: StatusStore,
    workers: Workers,
) -> None:
    doc = await accepted(store)
    await delivered_then_rejected(channel, names, doc)
    await workers.start(store)
    [item] = await until(store.dead_letters)
    [result] = await replay(store, Publisher(channel, names), [item.id], dt.datetime.now(dt.UTC))
    assert (result.outcome, result.queue, result.replay_count) == (
        ReplayOutcome.REPLAYED,
        names.inbox(COMMUNE),
        1,
    )
    inbox = await channel.get_queue(names.inbox(COMMUNE), ensure=False)
    back = await inbox.get(timeout=5)
    assert back is not None
    assert (back.body, back.message_id) == ("<edXML>Ủy ban nhân dân</edXML>".encode(), item.message_id)
    assert back.headers.items() >= delivery_headers(doc).items()
    assert str(back.headers[REPLAY_HEADER]).startswith(f"{item.id}/")
    assert "x-death" not in back.headers
    await back.nack(requeue=True)
    assert await state(store, doc) is DeliveryState.REPLAYED
    assert await store.dead_letters() == []  # replayed: listed only with include_replayed
    [kept] = await store.dead_letters(include_replayed=True)
    assert (kept.replay_count, kept.replayed_at is not None) == (1, True)

    consume = await connection.channel()
    inbox_worker = InboxWorker(consume, topology, names, store, Publisher(channel, names))
    await inbox_worker.start()
    try:
        await until(lambda: _state_is(store, doc, DeliveryState.QUEUED))
    finally:
        await inbox_worker.stop()
        await consume.close()
    timeline = await store.timeline(doc.bus_id)
    assert [e.state for e in timeline] == [
        DeliveryState.ACCEPTED,
        DeliveryState.DEAD_LETTERED,
        DeliveryState.REPLAYED,
        DeliveryState.QUEUED,
    ]
    assert timeline[2].detail == f"dead letter {item.id} replayed to {names.inbox(COMMUNE)}"


async def _state_is(store: StatusStore, doc: AcceptedDocument, wanted: DeliveryState) -> bool:
    return await state(store, doc) is wanted


async def test_replayed_message_that_dies_again_is_a_new_dead_letter(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    doc = await accepted(store)
    await delivered_then_rejected(channel, names, doc)
    await workers.start(store)
    [first] = await until(store.dead_letters)
    await replay(store, Publisher(channel, names), [first.id], dt.datetime.now(dt.UTC))
    inbox = await channel.get_queue(names.inbox(COMMUNE), ensure=False)
    again = await inbox.get(timeout=5)
    assert again is not None
    await again.reject(requeue=False)  # its x-death count starts at 1 again
    [second] = await until(store.dead_letters)
    assert second.id != first.id
    assert second.dead_key != first.dead_key
    assert await state(store, doc) is DeliveryState.DEAD_LETTERED


async def test_replay_reports_unknown_repeated_and_unroutable_ids(
    channel: AbstractChannel, names: BrokerNames, store: StatusStore, workers: Workers
) -> None:
    publisher = Publisher(channel, names)
    await publisher.dead_letter(b"<a/>", message_id="a", reason=REASON, source_queue=names.outbound_queue)
    await publisher.dead_letter(b"<b/>", message_id="b", reason=REASON, source_queue=f"{names.prefix}.gone")
    await workers.start(store)
    gone, kept = await until(lambda: _two(store))
    results = await replay(store, publisher, [kept.id, 999_999, kept.id, gone.id], dt.datetime.now(dt.UTC))
    assert [r.outcome for r in results] == [
        ReplayOutcome.REPLAYED,
        ReplayOutcome.UNKNOWN,
        ReplayOutcome.REPLAYED_AGAIN,
        ReplayOutcome.FAILED,
    ]
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[1].error == "no dead letter 999999"
    assert results[2].replay_count == 2
    assert results[2].previously_replayed_at is not None
    assert "no queue is bound" in (results[3].error or "")
    assert await take_all(channel, names.outbound_queue) == [b"<a/>", b"<a/>"]  # replayed twice, as asked
    unroutable = await store.dead_letter(gone.id)
    assert unroutable is not None
    assert (unroutable.replayed_at, unroutable.replay_count) == (None, 0)  # not recorded as replayed


# -- the operator's commands ---------------------------------------------------------------------------


def bus(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bus")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


async def test_cli_lists_and_replays_dead_letters(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    channel: AbstractChannel,
    names: BrokerNames,
    store: StatusStore,
    database_url: str,
    workers: Workers,
) -> None:
    config = str(
        write_config(tmp_path / "province.toml", tmp_path, prefix=names.prefix, database_url=database_url)
    )
    doc = await accepted(store)
    publisher = Publisher(channel, names)
    await publisher.dead_letter(
        b"<a/>",
        message_id="a",
        reason=REASON,
        source_queue=names.inbox(COMMUNE),
        headers=delivery_headers(doc),
    )
    await workers.start(store)
    [item] = await until(store.dead_letters)
    capsys.readouterr()

    assert await asyncio.to_thread(bus, "deadletters", "--config", config) == 0
    out = capsys.readouterr().out
    assert f"{doc.sender} → {COMMUNE}" in out
    assert all(text in out for text in (str(item.id), doc.document_id, names.inbox(COMMUNE), REASON))
    local = item.dead_at.astimezone(dt.timezone(dt.timedelta(hours=7))).strftime("%d/%m/%Y %H:%M:%S")
    assert local in out  # Asia/Ho_Chi_Minh time

    assert await asyncio.to_thread(bus, "replay", "--config", config, str(item.id), "999999") == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{item.id}: replayed to {names.inbox(COMMUNE)}",
        "999999: UNKNOWN: no dead letter 999999",
    ]
    assert await asyncio.to_thread(bus, "replay", "--config", config, str(item.id)) == 0
    assert capsys.readouterr().out.startswith(
        f"{item.id}: replayed AGAIN to {names.inbox(COMMUNE)} (replay 2;"
    )
    # Each replay is an operator's action in the audit log, with who ran it (issue 15 item 1).
    # (each `bus replay` is a process's chain of its own: in the order they ran, not by chain id)
    actions = sorted(
        [json.loads(r.data) async for r in store.audit_records() if r.kind == "operator.replay"],
        key=lambda a: str(a["at"]),
    )
    assert [a["results"] for a in actions] == [
        {str(item.id): "replayed", "999999": "unknown"},
        {str(item.id): "replayed-again"},
    ]
    assert all(a["operator"] == getpass.getuser() for a in actions)

    assert await asyncio.to_thread(bus, "deadletters", "--config", config, "--json") == 0
    assert json.loads(capsys.readouterr().out) == []  # replayed ones are not listed by default
    assert await asyncio.to_thread(bus, "deadletters", "--config", config, "--json", "--all") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["replay_count"], listed["reason"]) == (item.id, 2, REASON)
    assert await state(store, doc) is DeliveryState.REPLAYED

    assert await asyncio.to_thread(bus, "replay", "--config", str(tmp_path / "missing.toml"), "1") == 2
    assert "cannot read configuration" in capsys.readouterr().err
