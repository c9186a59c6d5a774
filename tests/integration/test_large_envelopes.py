"""Large envelopes through a real ``bus serve`` (issue 12, items 1, 2 and 6): scanned dossiers of
10 to 100 MB are pushed, stored once, delivered by reference and fetched as streams, and a SIGKILL
mid-stream loses and duplicates nothing. The no-loss proof of tests/integration/test_no_loss.py, on
the data path that large bodies take."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio

from adapters.http import create_app
from adapters.http.client import AgencyClient, ApiFailure, EnvelopeFile
from adapters.rabbitmq import BrokerNames
from bus.dsig import TrustStore, load_certificates, load_private_key, sign_tree, verify_tree
from bus.settings import Settings, load_settings
from bus.spooled import Received, write_envelope
from bus.xmlparse import parse_received
from entrypoints.runtime import Node
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, fresh_database, write_config
from tests.integration.processes import ServeProcess, free_port

pytestmark = pytest.mark.asyncio
MB = 1024 * 1024
PROVINCE = "000.00.00.H99"  # must sign: its envelopes' signatures are verified on the way in
# (size in MB, recipients): by reference because large; one of them to five agencies at once.
STREAM = [
    (10, ["000.00.21.H99"]),
    (40, ["000.00.21.H99", "000.00.22.H99"]),
    (100, ["000.01.21.H99"]),
    (20, ["000.00.21.H99", "000.01.21.H99", "000.02.21.H99", "000.00.22.H99", "000.01.22.H99"]),
    (30, ["000.02.22.H99"]),
    (10, ["000.00.22.H99"]),
]


@pytest_asyncio.fixture
async def province(tmp_path: Path, pki_dir: Path) -> AsyncIterator[tuple[Settings, str]]:
    """A node on a fresh PostgreSQL database and broker prefix, and the database's asyncpg DSN."""
    async with fresh_database("postgresql", tmp_path) as url:
        config = write_config(
            tmp_path / "province.toml", pki_dir, prefix=f"test-{uuid.uuid4().hex[:10]}", database_url=url
        )
        settings = load_settings(config)
        yield settings, url.replace("postgresql+asyncpg://", "postgresql://", 1)
        await delete_broker_objects(settings)


def _dossier(pki: Path, size_mb: int, recipients: list[str], number: int, out: Path) -> EnvelopeFile:
    """A signed envelope with an attachment of *size_mb*, written to *out* (never whole in memory)."""
    key = load_private_key(pki / "nodes" / f"{PROVINCE}.key")
    [certificate] = load_certificates(pki / "nodes" / f"{PROVINCE}.pem")
    data = make_document(PROVINCE, recipients, number, notation="HS-LON", padding=size_mb * MB)
    tree, texts = parse_received(Received.of_bytes(data))
    with texts.active(), out.open("wb") as file:
        sign_tree(tree, key, certificate)
        write_envelope(tree, file)
    return EnvelopeFile.of(out)


async def _send_until_accepted(client: AgencyClient, envelope: EnvelopeFile) -> tuple[str, int]:
    """Send until the bus answers 202 (or 409 to a retry: that attempt was accepted), as an agency
    system does through a restart; the bus id and the attempts that did not get through."""
    failures = 0
    while True:
        try:
            return str((await client.send(envelope))["bus_id"]), failures
        except httpx.TransportError:
            pass
        except ApiFailure as exc:
            if exc.status == 409 and failures:
                return str(exc.payload["bus_id"]), failures
            if exc.status not in (502, 503, 504):
                raise
        failures += 1
        await asyncio.sleep(0.5)


async def test_sigkill_mid_stream_of_large_envelopes_loses_and_duplicates_nothing(
    province: tuple[Settings, str], tmp_path: Path, pki_dir: Path
) -> None:
    settings, dsn = province
    envelopes = [
        _dossier(pki_dir, size, recipients, n, tmp_path / f"dossier-{n}.edxml")
        for n, (size, recipients) in enumerate(STREAM, start=1)
    ]
    server = ServeProcess(settings.base_dir / "province.toml", free_port(), tmp_path / "serve.log")
    server.start()
    await server.wait_ready()
    client = AgencyClient(server.url, PROVINCE, f"demo-only-{PROVINCE}".encode(), timeout=120)
    accepted: dict[str, list[str]] = {}
    cut_off = 0
    try:
        for n, (envelope, (_, recipients)) in enumerate(zip(envelopes, STREAM, strict=True)):
            if n == 2:  # the 100 MB one: kill the bus while it is arriving, then start it again
                sending = asyncio.create_task(_send_until_accepted(client, envelope))
                await asyncio.sleep(1.0)
                server.kill()
                await asyncio.sleep(1.0)
                server.start()
                bus_id, cut_off = await sending
            else:
                bus_id, _ = await _send_until_accepted(client, envelope)
            accepted[bus_id] = recipients
        await _every_copy_once(settings, dsn, accepted)
        assert cut_off > 0  # the kill really cut the 100 MB envelope off mid-stream
        assert len(server.events("node.started")) == 2
        await _fetched_whole(
            server.url, accepted, tmp_path, TrustStore(load_certificates(pki_dir / "ca.pem"))
        )
    finally:
        await client.aclose()
        server.stop()


async def _every_copy_once(settings: Settings, dsn: str, accepted: dict[str, list[str]]) -> None:
    """Every accepted envelope in each of its recipients' inboxes exactly once, by reference to one
    body; nothing left in the queues or the dead-letter queue."""
    expected = {f"{bus_id}|{r}" for bus_id, recipients in accepted.items() for r in recipients}
    db = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 120
        while (count := await db.fetchval("SELECT count(*) FROM inbox")) < len(expected):
            assert time.monotonic() < deadline, f"only {count} of {len(expected)} deliveries arrived"
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # anything redelivered late must still be absorbed
        rows = await db.fetch("SELECT message_id, bus_id, body_sha256, length(body) AS inline FROM inbox")
        assert sorted(r["message_id"] for r in rows) == sorted(expected)  # exactly once, every one
        assert {r["inline"] for r in rows} == {0}  # no copy of an envelope in the inbox
        by_document: dict[str, set[str]] = {}
        for row in rows:
            by_document.setdefault(row["bus_id"], set()).add(row["body_sha256"])
        assert all(len(shas) == 1 for shas in by_document.values())  # one body for all its recipients
        stored = await db.fetchval(
            "SELECT count(*) FROM bodies WHERE sha256 = ANY($1::text[])",
            list({sha for shas in by_document.values() for sha in shas}),
        )
        assert stored == len(accepted)
    finally:
        await db.close()
    names = BrokerNames(settings.amqp.prefix)
    connection = await aio_pika.connect(settings.amqp.url)
    try:
        channel = await connection.channel()
        for name in [names.dead_letter_queue] + [names.inbox(a.organ_id) for a in settings.agencies]:
            queue = await channel.declare_queue(name, passive=True)
            assert queue.declaration_result.message_count == 0, name
    finally:
        await connection.close()


async def _fetched_whole(url: str, accepted: dict[str, list[str]], tmp_path: Path, trust: TrustStore) -> None:
    """Each recipient fetches its copies as streams; each is the sealed envelope (its digest is the
    one the bus announced) and carries the sender's and the bus's signatures, which verify."""
    verified = 0
    for agency in sorted({r for recipients in accepted.values() for r in recipients}):
        async with AgencyClient(url, agency, f"demo-only-{agency}".encode(), timeout=120) as client:
            for item in await client.inbox():
                target = tmp_path / f"fetched-{item['id']}.edxml"
                size = await client.fetch_to(int(item["id"]), target)
                assert size > 10 * MB
                if verified < 2 and size < 50 * MB:  # two of them, end to end, in memory here
                    data = target.read_bytes()
                    tree, texts = parse_received(
                        Received(target.open("rb"), size, hashlib.sha256(data).hexdigest())
                    )
                    with texts.active():
                        assert len(verify_tree(tree, trust)) == 2
                    texts.source.close()
                    verified += 1
                target.unlink()
                await client.acknowledge(int(item["id"]), "done")
    assert verified == 2


# -- the same paths in process (the API on the ASGI transport), for what a real server hides ----------


@pytest_asyncio.fixture
async def node(node_settings: Settings) -> AsyncIterator[Node]:
    settings = node_settings.model_copy(
        update={"http": node_settings.http.model_copy(update={"max_body_bytes": 8 * MB})}
    )
    node = await Node.start(settings)
    yield node
    await node.stop()


def _client(node: Node, agency: str, sent: list[int] | None = None) -> AgencyClient:
    """A client of the node's API in process; *sent* records the size of each body part it answers
    with (httpx's ASGI transport joins them before the client sees them)."""
    app = create_app(node.api)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: Any) -> None:
            if sent is not None and message["type"] == "http.response.body" and message.get("body"):
                sent.append(len(message["body"]))
            await send(message)

        await app(scope, receive, record)

    transport = httpx.ASGITransport(app=recording)
    return AgencyClient("http://bus", agency, f"demo-only-{agency}".encode(), transport=transport)


async def test_an_envelope_over_the_limit_is_refused_naming_the_limit(node: Node, tmp_path: Path) -> None:
    big = tmp_path / "big.edxml"
    big.write_bytes(make_document("000.00.01.H99", ["000.00.21.H99"], 1, padding=9 * MB))
    async with _client(node, "000.00.01.H99") as client:
        with pytest.raises(ApiFailure) as caught:
            await client.send(EnvelopeFile.of(big))
    assert (caught.value.status, caught.value.code) == (413, "too-large")
    assert f"limit of {8 * MB} bytes (http.max_body_bytes)" in str(caught.value)
    assert await node.store.body_count() == 0


async def test_a_spooled_body_that_is_not_what_was_signed_changes_nothing(node: Node) -> None:
    body = make_document("000.00.01.H99", ["000.00.21.H99"], 2, padding=3 * MB)
    async with _client(node, "000.00.01.H99") as client:
        request = client._http.build_request("POST", "/v1/envelopes", content=body)
        request.headers.update(client._signing("POST", "/v1/envelopes", hashlib.sha256(b"other").hexdigest()))
        request.headers["Content-Type"] = "application/xml"
        response = await client._http.send(request)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "body-digest-mismatch")
    assert await node.store.body_count() == 0
    assert await node.store.find("000.00.01.H99,2026/11/20,2/UBND-VP") == []


async def test_a_large_envelope_is_fetched_as_a_stream_of_chunks(node: Node, tmp_path: Path) -> None:
    dossier = tmp_path / "dossier.edxml"
    dossier.write_bytes(make_document("000.00.01.H99", ["000.00.21.H99"], 3, padding=3 * MB))
    async with _client(node, "000.00.01.H99") as sender:
        await sender.send(EnvelopeFile.of(dossier))
    parts: list[int] = []
    async with _client(node, "000.00.21.H99", parts) as recipient:
        deadline = time.monotonic() + 30
        while not (items := await recipient.inbox()):
            assert time.monotonic() < deadline, "not delivered"
            await asyncio.sleep(0.1)
        [item] = items
        parts.clear()
        response = await recipient.request("GET", f"/v1/inbox/{item['id']}")
        data = response.content
        # Read from the body store a chunk at a time, each sent as it was read.
        assert parts == [MB, MB, MB, len(data) - 3 * MB]
        assert response.headers["content-length"] == str(len(data))
        assert response.headers["x-bus-body-sha256"] == hashlib.sha256(data).hexdigest()
        assert await recipient.fetch_to(int(item["id"]), tmp_path / "fetched.edxml") == len(data)
    assert (tmp_path / "fetched.edxml").read_bytes() == data
    assert b"<edXML:TraceHeader>" in data  # the sealed envelope, not the one sent
