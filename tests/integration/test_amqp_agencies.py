"""AMQP agencies against the real RabbitMQ (docs/amqp-agencies.md): the broker users that ``bus
amqp-users`` makes and what the broker lets them do; sending, refusals, deliveries to an AMQP and an HTTP
recipient, and acknowledgements, through the example client of docs/examples/; and a ``bus serve``
killed with SIGKILL mid-stream on the AMQP path, with nothing lost. Every test has a prefix of its own,
and deletes the users and broker objects it made."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from adapters.rabbitmq import BrokerNames, declare_topology
from bus.dsig import TrustStore
from bus.organ_id import OrganId
from bus.receipts import verify_receipt
from bus.settings import Settings, load_settings
from entrypoints.runtime import Node
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, fresh_database, write_config
from tests.integration.example_client import CLIENT
from tests.integration.processes import ServeProcess, free_port
from tests.integration.test_api import signed_by

pytestmark = pytest.mark.asyncio

MANAGEMENT = "http://127.0.0.1:15672/api"
ADMIN = ("guest", "guest")
SENDER, SENDER_2 = "000.00.01.H99", "000.00.02.H99"  # Sở Nội vụ, Sở Tài chính: over AMQP
COMMUNE = "000.01.21.H99"  # xã Xuân Phước: over AMQP
DISTRICT, COMMUNE_2 = "000.00.21.H99", "000.02.21.H99"  # over HTTP
AMQP_AGENCIES = (SENDER, SENDER_2, COMMUNE)
FROM_ENVIRONMENT = "from-the-environment-0123"  # Sở Tài chính's, from BUS_AMQP_PASSWORDS; the others' secrets


def _amqp_config(path: Path, pki: Path, database_url: str) -> Path:
    write_config(path, pki, prefix=f"test-amqp-{uuid.uuid4().hex[:8]}", database_url=database_url)
    text = path.read_text(encoding="utf-8")
    for code in AMQP_AGENCIES:
        text = text.replace(f'organ_id = "{code}"\n', f'organ_id = "{code}"\ntransport = "amqp"\n', 1)
    path.write_text(text, encoding="utf-8")
    return path


def _password(code: str) -> str:
    return FROM_ENVIRONMENT if code == SENDER_2 else f"demo-only-{code}"


def _url(settings: Settings, code: str) -> str:
    return f"amqp://{settings.amqp.prefix}.{code}:{_password(code)}@127.0.0.1:5672/"


def amqp_users(config: Path, *, passwords: str | None = None) -> subprocess.CompletedProcess[str]:
    """``bus amqp-users --config CONFIG``, as an operator runs it."""
    env = {**os.environ, "BUS_AMQP_PASSWORDS": passwords or f'{{"{SENDER_2}": "{FROM_ENVIRONMENT}"}}'}
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "amqp-users", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def _cleanup(settings: Settings) -> None:
    names = BrokerNames(settings.amqp.prefix)
    async with httpx.AsyncClient(base_url=MANAGEMENT, auth=ADMIN, timeout=10) as api:
        for user in (await api.get("/users")).json():
            if user["name"].startswith(f"{names.prefix}."):
                await api.delete(f"/users/{user['name']}")
    connection = await aio_pika.connect(settings.amqp.url)
    channel = await connection.channel()
    for name in (
        names.agency_intake,
        names.agency_acks,
        *(f"{names.prefix}.agency.{c}" for c in AMQP_AGENCIES),
    ):
        await channel.queue_delete(name)
    for name in (names.agency_intake, names.agency_acks):
        await channel.exchange_delete(name)
    await connection.close()
    await delete_broker_objects(settings)


@pytest_asyncio.fixture
async def province(tmp_path: Path, pki_dir: Path) -> AsyncIterator[Settings]:
    """A province with three AMQP agencies on a fresh prefix and SQLite database; their users made."""
    config = _amqp_config(tmp_path / "province.toml", pki_dir, f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    settings = load_settings(config)
    try:
        yield settings
    finally:
        await _cleanup(settings)


@pytest_asyncio.fixture
async def node(province: Settings) -> AsyncIterator[Node]:
    made = amqp_users(province.base_dir / "province.toml")
    assert made.returncode == 0, made.stderr
    running = await Node.start(province)
    yield running
    await running.stop()


# -- the users and what the broker lets them do --------------------------------------------------------


async def test_the_command_gives_each_amqp_agency_exactly_its_permissions(province: Settings) -> None:
    names = BrokerNames(province.amqp.prefix)
    connection = await aio_pika.connect(province.amqp.url)
    await declare_topology(await connection.channel(), province.topology, names)
    await connection.close()
    config = province.base_dir / "province.toml"
    first = amqp_users(config)
    assert first.returncode == 0, first.stderr
    said = first.stdout + first.stderr
    assert "demo-only" not in said  # no password, ever
    assert FROM_ENVIRONMENT not in said
    async with httpx.AsyncClient(base_url=MANAGEMENT, auth=ADMIN, timeout=10) as api:
        for code in AMQP_AGENCIES:
            user = f"{names.prefix}.{code}"
            assert f"{user}: created, permissions set" in first.stdout
            assert (await api.get(f"/users/{user}")).json()["tags"] == []
            [granted] = (await api.get(f"/users/{user}/permissions")).json()
            escaped = names.prefix.replace("-", r"\-")
            assert granted == {
                "user": user,
                "vhost": "/",
                "configure": "^$",
                "write": rf"^({escaped}\.agency\-intake|{escaped}\.agency\-acks)$",
                "read": rf"^{escaped}\.agency\.{code.replace('.', chr(92) + '.')}$",
            }
        assert (await api.get(f"/users/{names.prefix}.{DISTRICT}")).status_code == 404  # HTTP: no user
    again = amqp_users(config)
    assert again.returncode == 0
    assert again.stdout.count(": unchanged (") == len(AMQP_AGENCIES)

    async with CLIENT.AgencyConnection(_url(province, COMMUNE), COMMUNE, prefix=names.prefix) as agency:
        refused = {
            "another agency's queue": lambda ch: _get(ch, f"{names.prefix}.agency.{SENDER}"),
            "its own inbox queue (the bus's)": lambda ch: _get(ch, names.inbox(OrganId.parse(COMMUNE))),
            "the intake queue": lambda ch: _get(ch, names.agency_intake),
            "the delivery exchange": lambda ch: _publish(ch, names.deliver_exchange, user=agency.user),
            "the default exchange": lambda ch: _publish(ch, "", user=agency.user),
            "a queue of its own making": lambda ch: ch.declare_queue(f"{names.prefix}.mine"),
        }
        for what, attempt in refused.items():
            channel = await agency._connection.channel(publisher_confirms=True)
            with pytest.raises(ChannelAccessRefused):
                await attempt(channel)
            print(f"refused: {what}")
        channel = await agency._connection.channel(publisher_confirms=True)
        with pytest.raises(ChannelPreconditionFailed, match="user_id property set to"):
            await _publish(channel, names.agency_intake, user=f"{names.prefix}.{SENDER}")
        channel = await agency._connection.channel()
        assert await _get(channel, f"{names.prefix}.agency.{COMMUNE}") is None  # its own: allowed, empty


async def _get(channel: Any, queue: str) -> Any:
    return await (await channel.get_queue(queue, ensure=False)).get(fail=False, timeout=5)


async def _publish(channel: Any, exchange: str, *, user: str) -> None:
    target = (
        channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
    )
    await target.publish(aio_pika.Message(b"<edXML/>", user_id=user), routing_key="x", timeout=5)


async def test_a_bad_password_stops_the_command_before_any_user_is_made(province: Settings) -> None:
    refused = amqp_users(province.base_dir / "province.toml", passwords=f'{{"{SENDER_2}": "short"}}')
    assert refused.returncode == 2
    assert f"the password of {SENDER_2} (BUS_AMQP_PASSWORDS) has 5 bytes" in refused.stderr
    async with httpx.AsyncClient(base_url=MANAGEMENT, auth=ADMIN, timeout=10) as api:
        for code in AMQP_AGENCIES:
            assert (await api.get(f"/users/{province.amqp.prefix}.{code}")).status_code == 404


# -- sending, refusals, deliveries, acknowledgements ---------------------------------------------------


async def _received(agency: Any, count: int, *, ack: str | None = None) -> list[AbstractIncomingMessage]:
    """What *agency* takes from its delivery queue until it has *count* messages (or 15 s pass)."""
    taken: list[AbstractIncomingMessage] = []

    async def keep(message: AbstractIncomingMessage) -> str | None:
        taken.append(message)
        return ack

    deadline = time.monotonic() + 15
    while len(taken) < count and time.monotonic() < deadline:
        await agency.receive(keep, idle_s=0.5)
    return taken


async def _timeline(node: Node, bus_id: str) -> set[tuple[str | None, str]]:
    return {(e.recipient, e.state.value) for e in await node.store.timeline(bus_id)}


async def test_a_signed_envelope_sent_over_amqp_reaches_an_amqp_and_an_http_recipient(
    node: Node, pki_dir: Path
) -> None:
    prefix = node.settings.amqp.prefix
    envelope = signed_by(pki_dir, SENDER, make_document(SENDER, [COMMUNE, DISTRICT], 7))
    async with CLIENT.AgencyConnection(_url(node.settings, SENDER), SENDER, prefix=prefix) as sender:
        answer = await sender.send(envelope)
    assert answer["status"] == 202, answer
    assert answer["recipients"] == [
        {"organ_id": COMMUNE, "route": "local"},
        {"organ_id": DISTRICT, "route": "local"},
    ]
    bus_id = answer["bus_id"]
    # The reply carries the acceptance receipt, as the HTTP 202 does (issue 15 item 4).
    receipt = verify_receipt(answer["receipt"], TrustStore.from_pem_files([pki_dir / "ca.pem"])).value
    assert (receipt["bus_id"], receipt["sender"]) == (bus_id, SENDER)
    assert receipt["recipients"] == sorted([COMMUNE, DISTRICT])
    assert receipt["sha256"] == hashlib.sha256(envelope).hexdigest()
    async with CLIENT.AgencyConnection(_url(node.settings, COMMUNE), COMMUNE, prefix=prefix) as commune:
        [delivered] = await _received(commune, 1)
    assert delivered.message_id == f"{bus_id}|{COMMUNE}"
    assert {
        k: delivered.headers[k] for k in ("x-bus-id", "x-bus-sender", "x-bus-recipient", "x-bus-kind")
    } == {
        "x-bus-id": bus_id,
        "x-bus-sender": SENDER,
        "x-bus-recipient": COMMUNE,
        "x-bus-kind": "document",
    }
    assert b"TraceHeader" in delivered.body  # as delivered: with the bus's trace and signature
    for _ in range(150):
        items = await node.store.inbox(DISTRICT)
        if items:
            break
        await asyncio.sleep(0.1)
    assert [i.bus_id for i in items] == [bus_id]  # the HTTP recipient's inbox, as ever ...
    assert await node.store.inbox(COMMUNE) == []  # ... and none for the AMQP one
    timeline = await _timeline(node, bus_id)
    for recipient in (COMMUNE, DISTRICT):
        assert {(recipient, "accepted"), (recipient, "queued")} <= timeline


async def test_a_large_envelope_that_travels_by_reference_reaches_the_amqp_agency_whole(node: Node) -> None:
    """Over store.inline_max_bytes the bus's copies name the envelope in the body store; the agency's
    queue gets the envelope itself, the bytes the HTTP recipient fetches."""
    prefix = node.settings.amqp.prefix
    async with CLIENT.AgencyConnection(_url(node.settings, SENDER), SENDER, prefix=prefix) as sender:
        answer = await sender.send(make_document(SENDER, [COMMUNE, DISTRICT], 13, padding=300_000))
    assert answer["status"] == 202, answer
    async with CLIENT.AgencyConnection(_url(node.settings, COMMUNE), COMMUNE, prefix=prefix) as commune:
        [delivered] = await _received(commune, 1)
    for _ in range(150):
        items = await node.store.inbox(DISTRICT)
        if items:
            break
        await asyncio.sleep(0.1)
    [item] = items
    assert item.body_sha256 is not None  # by reference inside the bus ...
    assert delivered.body == await node.store.read_body(item.body_sha256)  # ... whole to the agency
    assert len(delivered.body) > 300_000
    assert "x-bus-body-sha256" not in delivered.headers


async def test_refusals_come_back_with_the_http_apis_codes_and_deliver_nothing(node: Node) -> None:
    prefix = node.settings.amqp.prefix
    async with CLIENT.AgencyConnection(_url(node.settings, SENDER), SENDER, prefix=prefix) as sender:
        first = await sender.send(make_document(SENDER, [COMMUNE], 8))
        assert first["status"] == 202
        answers = {
            "duplicate": await sender.send(make_document(SENDER, [COMMUNE], 8)),
            "forged-sender": await sender.send(make_document(SENDER_2, [COMMUNE], 9)),
            "malformed-xml": await sender.send(b"<edXML"),
            "invalid-envelope": await sender.send(make_document(SENDER, [COMMUNE], 10, date="20/11/2026")),
        }
        sender.user = ""  # no user_id property: who sent it is unknown
        answers["unauthenticated"] = await sender.send(make_document(SENDER, [COMMUNE], 11))
    for code, answer in answers.items():
        assert answer["error"]["code"] == code, answer
    assert answers["duplicate"]["status"] == 409
    assert answers["duplicate"]["error"]["bus_id"] == first["bus_id"]
    assert answers["forged-sender"]["status"] == 403
    assert answers["invalid-envelope"]["error"]["problems"]
    assert answers["unauthenticated"]["status"] == 401
    async with CLIENT.AgencyConnection(_url(node.settings, COMMUNE), COMMUNE, prefix=prefix) as commune:
        delivered = await _received(commune, 2)
    assert [m.message_id for m in delivered] == [f"{first['bus_id']}|{COMMUNE}"]  # the first one only


async def test_acknowledgements_land_on_the_timeline_and_follow_the_http_apis_rules(node: Node) -> None:
    prefix = node.settings.amqp.prefix
    async with CLIENT.AgencyConnection(_url(node.settings, SENDER), SENDER, prefix=prefix) as sender:
        bus_id = (await sender.send(make_document(SENDER, [COMMUNE], 12)))["bus_id"]
        async with CLIENT.AgencyConnection(_url(node.settings, COMMUNE), COMMUNE, prefix=prefix) as commune:
            [delivered] = await _received(commune, 1, ack="processing")
            assert delivered.message_id == f"{bus_id}|{COMMUNE}"
            done = await commune.acknowledge(bus_id, "done")
            late = await commune.acknowledge(bus_id, "fail", "too late")
            unreasoned = await commune.acknowledge(bus_id, "fail")
        not_yours = await sender.acknowledge(bus_id, "done")
    assert done == {"status": 200, "bus_id": bus_id, "recipient": COMMUNE, "state": "done"}
    assert (late["status"], late["error"]["code"]) == (409, "already-final")
    assert (unreasoned["status"], unreasoned["error"]["code"]) == (400, "bad-acknowledgement")
    assert (not_yours["status"], not_yours["error"]["code"]) == (404, "not-found")
    events = [(e.recipient, e.state.value) for e in await node.store.timeline(bus_id)]
    assert events == [(COMMUNE, s) for s in ("accepted", "queued", "fetched", "processing", "done")]
    [delivery] = await node.store.deliveries(bus_id)
    assert delivery.state.value == "done"


# -- nothing lost when the node dies mid-stream -------------------------------------------------------

STREAM = 900
TARGETS = [COMMUNE, SENDER, SENDER_2, DISTRICT, COMMUNE_2]  # three over AMQP, two over HTTP


def _stream(seed: int) -> list[tuple[str, bytes, list[str]]]:
    rng = random.Random(seed)
    stream = []
    for number in range(1, STREAM + 1):
        sender = rng.choice([SENDER, SENDER_2])
        recipients = rng.sample([t for t in TARGETS if t != sender], rng.randint(1, 3))
        stream.append(
            (sender, make_document(sender, recipients, number, notation=f"AMQP-{seed}"), recipients)
        )
    return stream


@pytest_asyncio.fixture
async def pg_province(tmp_path: Path, pki_dir: Path) -> AsyncIterator[tuple[Settings, str]]:
    async with fresh_database("postgresql", tmp_path) as url:
        settings = load_settings(_amqp_config(tmp_path / "province.toml", pki_dir, url))
        try:
            yield settings, url.replace("postgresql+asyncpg://", "postgresql://", 1)
        finally:
            await _cleanup(settings)


async def test_sigkill_mid_stream_on_the_amqp_path_loses_and_duplicates_nothing(
    pg_province: tuple[Settings, str], tmp_path: Path
) -> None:
    """Two agencies send over AMQP while three take their deliveries over AMQP (acknowledging each
    ``done``) and two are HTTP inboxes; a third of the way in, ``bus serve`` gets SIGKILL and is started
    again. Every envelope answered accepted reaches each recipient: each HTTP inbox exactly once, each
    AMQP agency at least once and once after its client keeps the first by message id; every timeline
    is complete, the acknowledgements included; every queue ends empty."""
    settings, dsn = pg_province
    config = settings.base_dir / "province.toml"
    assert amqp_users(config).returncode == 0
    server = ServeProcess(config, free_port(), tmp_path / "serve.log")
    server.start()
    await server.wait_ready()
    prefix = settings.amqp.prefix
    accepted: dict[str, list[str]] = {}
    received: dict[str, Counter[str]] = {code: Counter() for code in AMQP_AGENCIES}
    killed, finished = asyncio.Event(), asyncio.Event()
    connections = {
        code: CLIENT.AgencyConnection(_url(settings, code), code, prefix=prefix, answer_timeout_s=20)
        for code in AMQP_AGENCIES
    }
    for connection in connections.values():
        await connection.__aenter__()

    async def send(work: asyncio.Queue[tuple[str, bytes, list[str]]]) -> None:
        while not work.empty():
            sender, body, recipients = work.get_nowait()
            answer = await connections[sender].send_until_answered(body, attempts=10)
            assert answer["status"] == 202, answer
            accepted[answer["bus_id"]] = recipients
            if len(accepted) == STREAM // 3 and not killed.is_set():
                killed.set()
                server.kill()
                await asyncio.sleep(1.0)
                server.start()  # what the operator's supervisor does

    async def receive(code: str) -> None:
        async def keep(message: AbstractIncomingMessage) -> str:
            received[code][str(message.message_id)] += 1
            return "done"

        while not finished.is_set():
            try:
                await connections[code].receive(keep, idle_s=1.0)
            except CLIENT.NoAnswer:  # the node was down: the message comes back, and is kept once
                continue

    work: asyncio.Queue[tuple[str, bytes, list[str]]] = asyncio.Queue()
    for item in _stream(5):
        work.put_nowait(item)
    receivers = [asyncio.create_task(receive(code)) for code in AMQP_AGENCIES]
    try:
        await asyncio.gather(*(send(work) for _ in range(16)))
        assert len(accepted) == STREAM
        expected = {f"{b}|{r}" for b, recipients in accepted.items() for r in recipients}
        over_amqp = {m for m in expected if m.split("|")[1] in AMQP_AGENCIES}
        deadline = time.monotonic() + 120
        while {m for counts in received.values() for m in counts} != over_amqp:
            assert time.monotonic() < deadline, f"{len(over_amqp) - sum(map(len, received.values()))} missing"
            for receiver in receivers:
                if receiver.done():
                    receiver.result()  # a receiver that died says why
            await asyncio.sleep(0.5)
        await _all_written(dsn, expected, over_amqp, deadline)
    finally:
        finished.set()
        await asyncio.gather(*receivers, return_exceptions=True)
        for connection in connections.values():
            await connection.__aexit__(None, None, None)
        server.stop()
    copies = sum(sum(counts.values()) for counts in received.values())
    print(f"{len(over_amqp)} AMQP deliveries, {copies - len(over_amqp)} kept once more by message id")
    for code, counts in received.items():  # each in the queue of the agency it is addressed to
        assert all(m.endswith(f"|{code}") for m in counts)
    assert len(server.events("node.started")) == 2
    assert server.events("agency_intake.accepted")  # the restarted node took the stream over
    await _queues_empty(settings)


async def _all_written(dsn: str, expected: set[str], over_amqp: set[str], deadline: float) -> None:
    """The HTTP inboxes hold each of their deliveries exactly once; every timeline is complete."""
    db = await asyncpg.connect(dsn)
    try:
        over_http = expected - over_amqp
        while await db.fetchval("SELECT count(*) FROM inbox") < len(over_http):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        while await db.fetchval("SELECT count(*) FROM events WHERE state = 'done'") < len(over_amqp):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # anything redelivered late must still be absorbed
        rows = await db.fetch("SELECT message_id FROM inbox")
        assert sorted(r["message_id"] for r in rows) == sorted(over_http)  # exactly once, every one
        events = await db.fetch("SELECT bus_id, recipient, state FROM events")
        seen = {(e["bus_id"], e["recipient"], e["state"]) for e in events}
        assert len(events) == len(seen)  # no event written twice
        for delivery in expected:
            bus_id, recipient = delivery.split("|")
            states = (
                ("accepted", "queued", "fetched", "done") if delivery in over_amqp else ("accepted", "queued")
            )
            for state in states:
                assert (bus_id, recipient, state) in seen, (delivery, state)
        done = await db.fetch("SELECT bus_id, recipient FROM deliveries WHERE state = 'done'")
        assert {f"{d['bus_id']}|{d['recipient']}" for d in done} == over_amqp
    finally:
        await db.close()


async def _queues_empty(settings: Settings) -> None:
    names = BrokerNames(settings.amqp.prefix)
    queues = [names.dead_letter_queue, names.agency_intake, names.agency_acks]
    queues += [names.inbox(a.organ_id) for a in settings.agencies]
    queues += [names.agency_queue(OrganId.parse(code)) for code in AMQP_AGENCIES]
    connection = await aio_pika.connect(settings.amqp.url)
    channel = await connection.channel()
    depths = {}
    for name in queues:
        depths[name] = (await channel.declare_queue(name, passive=True)).declaration_result.message_count
    await connection.close()
    assert set(depths.values()) == {0}, depths
