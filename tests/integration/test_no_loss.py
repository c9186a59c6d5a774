"""Proof of no loss against the real broker and PostgreSQL (issue 3, item 8).

A stream of several thousand envelopes goes to real ``bus serve`` processes over HTTP, as agency
systems send them (retrying through refused connections and 503s). Mid-stream, a server is killed with
SIGKILL and restarted, or the RabbitMQ broker itself is restarted. At the end, every envelope the bus
answered "accepted" is in each of its recipients' inboxes exactly once, its timeline holds "accepted"
and "queued" for every recipient, and nothing is left in the queues or the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import pytest_asyncio

from adapters.http.client import AgencyClient
from adapters.rabbitmq import BrokerNames
from bus.settings import Settings, load_settings
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, fresh_database, write_config
from tests.integration.processes import ServeProcess, StreamResult, free_port, stream_envelopes

pytestmark = pytest.mark.asyncio

ENVELOPES = 3000
SENDERS = [
    "000.00.01.H99",
    "000.00.02.H99",
    "000.00.03.H99",
    "000.00.21.H99",
    "000.00.22.H99",
    "000.01.22.H99",
]
# Local recipients, one of them a former code (delivered to Xuân Lãnh through its alias).
RECIPIENTS = [
    "000.00.00.H99",
    "000.00.21.H99",
    "000.01.21.H99",
    "000.02.21.H99",
    "000.00.22.H99",
    "000.02.22.H99",
    "000.31.00.H99",
    "000.04.21.H99",
]


def _stream(seed: int) -> list[tuple[int, bytes, list[str]]]:
    rng = random.Random(seed)
    envelopes = []
    for number in range(1, ENVELOPES + 1):
        sender = rng.randrange(len(SENDERS))
        choices = [r for r in RECIPIENTS if r != SENDERS[sender]]
        recipients = rng.sample(choices, rng.randint(1, 3))
        body = make_document(SENDERS[sender], recipients, number, notation=f"NL-{seed}")
        envelopes.append((sender, body, recipients))
    return envelopes


@pytest_asyncio.fixture
async def province(tmp_path: Path, pki_dir: Path) -> AsyncIterator[tuple[Settings, str]]:
    """A node's settings on a fresh PostgreSQL database and a fresh broker prefix, and its asyncpg DSN."""
    async with fresh_database("postgresql", tmp_path) as url:
        config = write_config(
            tmp_path / "province.toml", pki_dir, prefix=f"test-{uuid.uuid4().hex[:10]}", database_url=url
        )
        settings = load_settings(config)
        yield settings, url.replace("postgresql+asyncpg://", "postgresql://", 1)
        await delete_broker_objects(settings)


def _clients(url: str) -> list[AgencyClient]:
    return [AgencyClient(url, s, f"demo-only-{s}".encode(), timeout=30) for s in SENDERS]


async def _drained(settings: Settings, dsn: str, result: StreamResult, within_s: float = 120) -> None:
    """Wait until every expected delivery is in an inbox, then check everything."""
    expected = {f"{bus_id}|{r}" for bus_id, recipients in result.accepted.items() for r in recipients}
    db = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within_s
        while (count := await db.fetchval("SELECT count(*) FROM inbox")) < len(expected):
            assert time.monotonic() < deadline, f"only {count} of {len(expected)} deliveries arrived"
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # anything redelivered late must still be absorbed
        rows = await db.fetch("SELECT message_id, agency, addressed_to FROM inbox")
        assert len(rows) == len(expected)  # exactly once ...
        assert {r["message_id"] for r in rows} == expected  # ... and every one
        for row in rows:
            agency = "000.03.21.H99" if row["addressed_to"] == "000.04.21.H99" else row["addressed_to"]
            assert row["agency"] == agency
        confirmed = await db.fetch("SELECT bus_id FROM documents WHERE confirmed")
        assert {r["bus_id"] for r in confirmed} >= set(result.accepted)
        events = await db.fetch("SELECT bus_id, recipient, state FROM events")
        seen = {(e["bus_id"], e["recipient"], e["state"]) for e in events}
        for bus_id, recipients in result.accepted.items():
            for recipient in recipients:
                assert (bus_id, recipient, "accepted") in seen, (bus_id, recipient)
                assert (bus_id, recipient, "queued") in seen, (bus_id, recipient)
        assert len(events) == len(seen)  # no event written twice
    finally:
        await db.close()
    names = BrokerNames(settings.amqp.prefix)
    connection = await aio_pika.connect(settings.amqp.url)
    channel = await connection.channel()
    queues = [names.dead_letter_queue] + [names.inbox(a.organ_id) for a in settings.agencies]
    depths = {}
    for name in queues:
        queue = await channel.declare_queue(name, passive=True)
        depths[name] = queue.declaration_result.message_count
    await connection.close()
    assert set(depths.values()) == {0}, depths


async def _stream_through(
    province: tuple[Settings, str],
    tmp_path: Path,
    seed: int,
    disrupt: Callable[[ServeProcess], Awaitable[None]],
) -> tuple[StreamResult, ServeProcess]:
    """Stream ENVELOPES through one ``bus serve``; when a third is accepted, run *disrupt* while the
    stream goes on; then check that nothing was lost or duplicated."""
    settings, dsn = province
    server = ServeProcess(settings.base_dir / "province.toml", free_port(), tmp_path / "serve.log")
    server.start()
    await server.wait_ready()
    trigger = asyncio.Event()

    def progress(accepted: int) -> None:
        if accepted >= ENVELOPES // 3:
            trigger.set()

    async def disruption() -> None:
        await trigger.wait()
        await disrupt(server)

    clients = _clients(server.url)
    task = asyncio.create_task(disruption())
    try:
        result = await stream_envelopes(clients, _stream(seed), concurrency=16, on_progress=progress)
        await task
        assert len(result.accepted) == ENVELOPES
        await _drained(settings, dsn, result)
    finally:
        if not task.done():
            task.cancel()
        for client in clients:
            await client.aclose()
        server.stop()
    return result, server


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    province: tuple[Settings, str], tmp_path: Path
) -> None:
    async def kill_and_restart(server: ServeProcess) -> None:
        server.kill()
        await asyncio.sleep(1.0)
        server.start()  # the same command an operator's supervisor runs

    result, server = await _stream_through(province, tmp_path, 1, kill_and_restart)
    assert result.transport_errors > 0  # the kill really cut requests off mid-stream
    assert len(server.events("node.started")) == 2


async def test_two_servers_share_the_work_without_double_delivery(
    province: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, dsn = province
    config = settings.base_dir / "province.toml"
    servers = [ServeProcess(config, free_port(), tmp_path / f"serve-{i}.log") for i in range(2)]
    for server in servers:
        server.start()
    for server in servers:
        await server.wait_ready()
    clients = _clients(servers[0].url) + _clients(servers[1].url)
    stream = [
        (sender + len(SENDERS) * (i % 2), body, r) for i, (sender, body, r) in enumerate(_stream(2)[:1000])
    ]
    try:
        result = await stream_envelopes(clients, stream, concurrency=16)
        await _drained(settings, dsn, result)
    finally:
        for client in clients:
            await client.aclose()
        for server in servers:
            server.stop()
    queued = [len(server.events("inbox.queued")) for server in servers]
    accepted = [len(server.events("send.accepted")) for server in servers]
    assert sum(accepted) == 1000
    assert all(n > 0 for n in accepted)
    deliveries = sum(len(r) for r in result.accepted.values())
    assert sum(queued) == deliveries  # each delivery written by exactly one of them
    assert all(n > 0 for n in queued)  # and both consumed


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def require_rabbitmqctl() -> None:
    """Fail (never skip: tests/integration/conftest.py) unless ``rabbitmqctl`` can control the local
    broker, so a machine without it cannot pass the suite with the broker-restart case unrun."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail(
            "rabbitmqctl is not on PATH, so the broker-restart case cannot restart RabbitMQ: run "
            "scripts/services.sh (it installs rabbitmq-server) and put rabbitmqctl's directory "
            "(/usr/sbin on Debian) on PATH"
        )
    try:
        _rabbitmqctl("await_startup")
    except (OSError, subprocess.SubprocessError) as exc:
        said = (getattr(exc, "stderr", None) or b"").decode(errors="replace").strip()
        pytest.fail(
            f"rabbitmqctl cannot control the local broker ({exc} {said}): run scripts/services.sh, "
            "as a user allowed to run rabbitmqctl (one who can read its Erlang cookie)"
        )


async def test_broker_restart_mid_stream_loses_nothing(
    province: tuple[Settings, str], tmp_path: Path
) -> None:
    require_rabbitmqctl()

    async def restart_broker(_server: ServeProcess) -> None:
        try:
            await asyncio.to_thread(_rabbitmqctl, "stop_app")
            await asyncio.sleep(2.0)
        finally:
            await asyncio.to_thread(_rabbitmqctl, "start_app")  # never leave the machine's broker stopped
            await asyncio.to_thread(_rabbitmqctl, "await_startup")

    result, server = await _stream_through(province, tmp_path, 3, restart_broker)
    # The broker really went away while envelopes were arriving: publishes whose confirm was lost were
    # published again once it was back (adapters/rabbitmq/publisher.py), or, past the publish timeout,
    # answered 503.
    assert server.events("publisher.republish") or result.unavailable > 0
    assert server.process is not None
    assert server.process.returncode == 0  # the same process rode out the restart and stopped cleanly
