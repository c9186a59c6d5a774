"""Proof that nothing is lost when PostgreSQL restarts (issue 14, item 3).

A real ``bus serve`` process takes a stream of envelopes over HTTP, as agency systems send them
(retrying through refused connections and 503s: tests/integration/processes.py), while PostgreSQL is
stopped and started again under it: meanwhile the bus answers 503, never "accepted" for what it could
not keep, and the same process carries on afterwards. At the end every envelope the bus answered 202
is in each of its recipients' inboxes exactly once, its timeline holds "accepted" and "queued" for
every recipient, and the queues are empty.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import pytest_asyncio

from adapters.http.client import AgencyClient
from adapters.rabbitmq import BrokerNames
from bus.organ_id import OrganId
from bus.settings import Settings, load_settings
from tests.factory import make_document
from tests.integration.conftest import PG_ADMIN_DSN, delete_broker_objects, write_config
from tests.integration.processes import ServeProcess, StreamResult, free_port, stream_envelopes

pytestmark = pytest.mark.asyncio

SYSTEM_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
SENDERS = [  # over HTTP
    "000.00.01.H99",
    "000.00.02.H99",
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
ALIASES = {"000.04.21.H99": "000.03.21.H99"}


def _stream(seed: int, count: int) -> list[tuple[int, bytes, list[str]]]:
    """*count* envelopes from SENDERS, each to one to three RECIPIENTS (fan-outs)."""
    rng = random.Random(seed)
    envelopes = []
    for number in range(1, count + 1):
        sender = rng.randrange(len(SENDERS))
        choices = [r for r in RECIPIENTS if r != SENDERS[sender]]
        recipients = rng.sample(choices, rng.randint(1, 3))
        body = make_document(SENDERS[sender], recipients, number, notation=f"CL-{seed}")
        envelopes.append((sender, body, recipients))
    return envelopes


def _clients(url: str) -> list[AgencyClient]:
    return [AgencyClient(url, s, f"demo-only-{s}".encode(), timeout=30) for s in SENDERS]


async def _all_delivered_once(
    settings: Settings,
    dsn: str,
    accepted: dict[str, list[str]],
    broker_url: str,
    *,
    more_queues: tuple[str, ...] = (),
    within_s: float = 120,
) -> None:
    """Wait until every delivery of every *accepted* envelope is in an inbox, then check: each exactly
    once, in the right agency's inbox, every timeline with "accepted" and "queued" for each recipient,
    no event written twice; and the inbox and dead-letter queues (and *more_queues*) empty, read
    through *broker_url*. As tests/integration/test_no_loss.py checks."""
    expected = {f"{bus_id}|{r}" for bus_id, recipients in accepted.items() for r in recipients}
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
            assert row["agency"] == ALIASES.get(row["addressed_to"], row["addressed_to"])
        confirmed = await db.fetch("SELECT bus_id FROM documents WHERE confirmed")
        assert {r["bus_id"] for r in confirmed} >= set(accepted)
        events = await db.fetch("SELECT bus_id, recipient, state FROM events")
        seen = {(e["bus_id"], e["recipient"], e["state"]) for e in events}
        for bus_id, recipients in accepted.items():
            for recipient in recipients:
                assert (bus_id, recipient, "accepted") in seen, (bus_id, recipient)
                assert (bus_id, recipient, "queued") in seen, (bus_id, recipient)
        assert len(events) == len(seen)  # no event written twice
    finally:
        await db.close()
    names = BrokerNames(settings.amqp.prefix)
    inboxes = {ALIASES.get(r, r) for r in RECIPIENTS}
    queues = [names.dead_letter_queue, *(names.inbox(OrganId.parse(a)) for a in inboxes), *more_queues]
    connection = await aio_pika.connect(broker_url, timeout=10)
    try:
        channel = await connection.channel()
        depths = {}
        for name in queues:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count
    finally:
        await connection.close()
    assert set(depths.values()) == {0}, depths


async def _watch(servers: list[ServeProcess], exited: dict[str, int]) -> None:
    """Note every ``bus serve`` of *servers* that exits (it should run until stopped)."""
    while True:
        for server in servers:
            assert server.process is not None
            code = server.process.poll()
            if code is not None:
                exited.setdefault(server.url, code)
        await asyncio.sleep(0.2)


def _refusals(servers: list[ServeProcess]) -> str:
    """What each server answered 503 for, by cause (and for a broker's nack, by recipient queue)."""
    said = []
    for server in servers:
        causes: Counter[str] = Counter()
        for event in server.events("send.broker_unavailable"):
            error = str(event.get("error", ""))
            recipient = error.split("|", 1)[1].split(":", 1)[0] if "|" in error else "?"
            kind = error.rsplit("<", 1)[-1].split(":", 1)[0]  # DeliveryError: a nack
            causes[f"broker-unavailable to {recipient} ({kind})"] += 1
        causes["store-unavailable"] = len(server.events("send.store_unavailable"))
        said.append(f"{server.log.name}: {dict(causes)}")
    return "; ".join(said)


async def _stream_disrupted(
    servers: list[ServeProcess],
    envelopes: list[tuple[int, bytes, list[str]]],
    trigger_at: int,
    disrupt: Callable[[], Awaitable[None]],
    *,
    within_s: float,
) -> tuple[StreamResult, int, dict[str, int]]:
    """Stream *envelopes* over HTTP to *servers* (in turn, 16 in flight); once *trigger_at* are
    accepted run *disrupt* while the stream goes on. Returns the result, how many envelopes had been
    accepted when *disrupt* returned, and the servers that exited meanwhile (URL: exit status). Fails
    when the stream has not ended within *within_s* (a gateway that refuses for good: no hanging)."""
    trigger = asyncio.Event()
    accepted_now = 0
    done_at = -1

    def progress(accepted: int) -> None:
        nonlocal accepted_now
        accepted_now = accepted
        if accepted >= trigger_at:
            trigger.set()

    async def disruption() -> None:
        nonlocal done_at
        await trigger.wait()
        await disrupt()
        done_at = accepted_now

    clients = [c for server in servers for c in _clients(server.url)]
    stream = [
        (sender + len(SENDERS) * (i % len(servers)), body, recipients)
        for i, (sender, body, recipients) in enumerate(envelopes)
    ]
    exited: dict[str, int] = {}
    watcher = asyncio.create_task(_watch(servers, exited))
    task = asyncio.create_task(disruption())
    try:
        try:
            result = await asyncio.wait_for(
                stream_envelopes(clients, stream, concurrency=16, on_progress=progress), within_s
            )
        except TimeoutError:
            raise AssertionError(
                f"the stream did not end within {within_s} s: {accepted_now} of {len(stream)} envelopes "
                f"accepted (disruption {'over' if task.done() else 'under way'}); the gateways' 503s: "
                f"{_refusals(servers)}"
            ) from None
        await task
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
        for client in clients:
            await client.aclose()
    return result, done_at, exited


# -- PostgreSQL stopped and started again -----------------------------------------------------------

PG_ENVELOPES = 2000
PG_PORT = "5432"


def _pg_cluster() -> tuple[str, str]:
    """The version and name of the local PostgreSQL cluster on port 5432 (``pg_lsclusters``). Fails
    (never skips: tests/integration/conftest.py) when Debian's pg_ctlcluster is not there to restart it."""
    for tool in ("pg_ctlcluster", "pg_lsclusters", "pg_isready"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} is not on PATH, so the PostgreSQL-restart case cannot restart the database: "
                "run scripts/services.sh (it installs Debian's postgresql, with postgresql-common)"
            )
    listed = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30, check=True
    )
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == PG_PORT:
            return fields[0], fields[1]
    pytest.fail(f"pg_lsclusters lists no PostgreSQL cluster on port {PG_PORT}:\n{listed.stdout}")


def _pg_ctl(action: str, cluster: tuple[str, str]) -> None:
    done = subprocess.run(
        ["pg_ctlcluster", *cluster, action], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"pg_ctlcluster {' '.join(cluster)} {action}: {done.stderr}{done.stdout}")


def _pg_accepting() -> bool:
    done = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", PG_PORT], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


def _pg_running_again(cluster: tuple[str, str], within_s: float = 60) -> None:
    """Start the cluster if it is down, and wait until it accepts connections."""
    deadline = time.monotonic() + within_s
    status = subprocess.run(
        ["pg_ctlcluster", *cluster, "status"], capture_output=True, timeout=30, check=False
    )
    if status.returncode != 0:  # 3: not running
        _pg_ctl("start", cluster)
    while not _pg_accepting():
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL {' '.join(cluster)} does not accept connections")
        time.sleep(0.5)


@asynccontextmanager
async def _database_surviving_restarts() -> AsyncIterator[str]:
    """A new PostgreSQL database (its SQLAlchemy URL), dropped afterwards through a new connection:
    conftest's fresh_database keeps one admin connection open, which a restart of the server cuts."""
    name = f"bus_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=30)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest_asyncio.fixture
async def restarted_database(
    tmp_path: Path, pki_dir: Path
) -> AsyncIterator[tuple[Settings, str, tuple[str, str]]]:
    """A province on the system broker and a fresh PostgreSQL database; PostgreSQL is running and
    accepting connections again afterwards, whatever happened."""
    cluster = _pg_cluster()
    try:
        async with _database_surviving_restarts() as url:
            prefix = f"test-pg-{uuid.uuid4().hex[:8]}"
            config = write_config(tmp_path / "province.toml", pki_dir, prefix=prefix, database_url=url)
            settings = load_settings(config)
            try:
                yield settings, url.replace("postgresql+asyncpg://", "postgresql://", 1), cluster
            finally:
                await asyncio.to_thread(_pg_running_again, cluster)
                await delete_broker_objects(settings)
    finally:
        await asyncio.to_thread(_pg_running_again, cluster)


async def test_postgresql_restarted_mid_stream_gets_503_never_a_lost_202(
    restarted_database: tuple[Settings, str, tuple[str, str]], tmp_path: Path
) -> None:
    """One gateway takes PG_ENVELOPES over HTTP (16 in flight); a fifth of the way in PostgreSQL is
    stopped for 4 s and started again. Meanwhile the gateway answers 503 (the stream sends again);
    afterwards the same process accepts again, and every 202 is delivered exactly once."""
    settings, dsn, cluster = restarted_database
    started = time.monotonic()
    server = ServeProcess(settings.base_dir / "province.toml", free_port(), tmp_path / "serve.log")
    server.start()
    await server.wait_ready()
    timeline: list[str] = []

    async def stop_and_start_postgresql() -> None:
        # Stopped for a few seconds, not `restart`ed: a restart is an outage of a fraction of a second,
        # which a stream of 16 requests in flight might pass by.
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(_pg_ctl, "stop", cluster)
            timeline.append(f"{time.monotonic() - t0:.1f}s PostgreSQL stopped")
            await asyncio.sleep(4.0)
        finally:
            await asyncio.to_thread(_pg_ctl, "start", cluster)
            await asyncio.to_thread(_pg_running_again, cluster)
            timeline.append(f"{time.monotonic() - t0:.1f}s PostgreSQL accepting again")

    try:
        result, done_at, exited = await _stream_disrupted(
            [server], _stream(12, PG_ENVELOPES), PG_ENVELOPES // 5, stop_and_start_postgresql, within_s=90
        )
        streamed_s = time.monotonic() - started
        assert exited == {}  # the gateway rode out the outage: nobody restarted it
        assert len(result.accepted) == PG_ENVELOPES
        assert 0 < done_at < PG_ENVELOPES, (done_at, timeline)
        await _all_delivered_once(settings, dsn, result.accepted, SYSTEM_BROKER)
        assert server.process is not None
        assert server.process.poll() is None
    finally:
        code = server.stop()
    assert code == 0
    assert len(server.events("node.started")) == 1  # the same process all along
    refused = len(server.events("send.store_unavailable"))
    print(
        f"\n{PG_ENVELOPES} envelopes, {sum(len(r) for r in result.accepted.values())} deliveries in "
        f"{streamed_s:.0f} s; {'; '.join(timeline)}; over at {done_at} accepted; 503s {result.unavailable} "
        f"(send.store_unavailable {refused}), transport errors {result.transport_errors}"
    )
    # While the database was down the bus said so (503, sent again by the stream), never 202.
    assert result.unavailable > 0
