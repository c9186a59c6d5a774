"""Proof that nothing is lost when a RabbitMQ node dies or PostgreSQL restarts (issue 14, item 3).

Real ``bus serve`` processes take a stream of envelopes over HTTP, as agency systems send them
(retrying through refused connections and 503s: tests/integration/processes.py), while the services
under them fail:

* two gateways on the local three-node cluster (tests/integration/cluster.py), one starting on node 1
  and the other on node 2, with an AMQP agency sending too (through the example client of
  docs/examples/, moving to another node as its connection dies): mid-stream the node that leads most
  of the prefix's quorum queues is killed with SIGKILL and started again, then another node is stopped
  gracefully. The gateways move to a surviving node by themselves (``broker.next_node``); neither exits;
* one gateway on the system broker while PostgreSQL is stopped and started again: meanwhile the bus
  answers 503, never "accepted" for what it could not keep, and the same process carries on afterwards.

At the end every envelope the bus answered 202 is in each of its recipients' inboxes exactly once, its
timeline holds "accepted" and "queued" for every recipient, and the queues are empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio

from adapters.http.client import AgencyClient
from adapters.rabbitmq import BrokerNames
from bus.organ_id import OrganId
from bus.settings import Settings, load_settings
from tests.factory import make_document
from tests.integration.cluster import (
    NODES,
    amqp_url,
    kill_node,
    queue_leader,
    restart_node,
    running_nodes,
    start_cluster,
    stop_node,
)
from tests.integration.conftest import PG_ADMIN_DSN, delete_broker_objects, fresh_database, write_config
from tests.integration.example_client import CLIENT
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


def _with_broker(settings: Settings, url: str) -> Settings:
    """*settings* with ``[amqp] url`` replaced: to clean up or inspect through a given node."""
    return settings.model_copy(update={"amqp": settings.amqp.model_copy(update={"url": url})})


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


# -- an AMQP agency sending through the cluster ------------------------------------------------------

AMQP_SENDER = "000.00.03.H99"  # Sở Khoa học và Công nghệ (docs/amqp-agencies.md)
CLUSTER_MANAGEMENT = "http://127.0.0.1:15681"  # node 1's (scripts/cluster.sh)


class AmqpSender:
    """An AMQP agency's document system on the cluster, through the example client: one connection at
    a time; when it dies or an answer does not come, the next node, and the same envelope again (a
    409 ``duplicate`` after such an attempt means that attempt was accepted)."""

    def __init__(self, prefix: str, nodes: list[int]) -> None:
        user = f"{prefix}.{AMQP_SENDER}:demo-only-{AMQP_SENDER}"
        self.urls = [f"amqp://{user}@127.0.0.1:{5680 + n}/" for n in nodes]
        self.prefix = prefix
        self.accepted: dict[str, list[str]] = {}
        self.failures: Counter[str] = Counter()  # what made an attempt fail, by kind
        self.reconnects = 0
        self._at = 0
        self._current: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        async with self._lock:
            while self._current is None:
                agency = CLIENT.AgencyConnection(
                    self.urls[self._at], AMQP_SENDER, prefix=self.prefix, answer_timeout_s=10
                )
                try:
                    await agency.__aenter__()
                    self._current = agency
                except Exception as exc:  # this node is down: the next one
                    self.failures[f"connect: {type(exc).__name__}"] += 1
                    self._at = (self._at + 1) % len(self.urls)
                    await asyncio.sleep(0.5)
            return self._current

    async def _drop(self, agency: Any) -> None:
        async with self._lock:
            if self._current is agency:
                self._current = None
                self._at = (self._at + 1) % len(self.urls)
                self.reconnects += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(agency.__aexit__(None, None, None), 5)

    async def send(self, body: bytes, recipients: list[str]) -> None:
        failed = False
        for _ in range(60):
            agency = await self._connection()
            try:
                answer = await agency.send(body)
            except Exception as exc:  # the connection died, or no answer came: maybe accepted
                self.failures[type(exc).__name__] += 1
                failed = True
                await self._drop(agency)
                continue
            error = answer.get("error", {})
            if answer["status"] == 202:
                self.accepted[answer["bus_id"]] = recipients
                return
            if answer["status"] == 409 and error.get("code") == "duplicate" and failed:
                self.accepted[error["bus_id"]] = recipients
                return
            assert answer["status"] == 503, answer  # anything else is a test bug
            self.failures[f"503 {error.get('code')}"] += 1
            failed = True
            await asyncio.sleep(0.5)
        raise AssertionError(f"no answer to an AMQP envelope after 60 attempts: {dict(self.failures)}")

    async def stream(self, stop: asyncio.Event, workers: int = 2, pause_s: float = 0.05) -> None:
        """Send envelopes to one to three RECIPIENTS, *workers* at a time, until *stop* is set."""
        rng = random.Random(13)
        numbers = itertools.count(1)

        async def worker() -> None:
            while not stop.is_set():
                recipients = rng.sample(RECIPIENTS, rng.randint(1, 3))
                await self.send(
                    make_document(AMQP_SENDER, recipients, next(numbers), notation="CL-AMQP"), recipients
                )
                await asyncio.sleep(pause_s)

        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            if self._current is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._current.__aexit__(None, None, None), 5)


def _amqp_users(config: Path) -> None:
    """``bus amqp-users --config CONFIG``: the AMQP agency's broker user, made through node 1."""
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "amqp-users", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def _delete_amqp_agency(settings: Settings) -> None:
    """The AMQP agency's user (through node 1's management API) and the broker objects of the AMQP
    path, which delete_broker_objects does not know."""
    names = BrokerNames(settings.amqp.prefix)
    async with httpx.AsyncClient(
        base_url=f"{CLUSTER_MANAGEMENT}/api", auth=("guest", "guest"), timeout=10
    ) as api:
        for user in (await api.get("/users")).json():
            if user["name"].startswith(f"{names.prefix}."):
                await api.delete(f"/users/{user['name']}")
    connection = await aio_pika.connect(settings.amqp.url, timeout=10)
    try:
        channel = await connection.channel()
        for name in (names.agency_intake, names.agency_acks, names.agency_queue(OrganId.parse(AMQP_SENDER))):
            await channel.queue_delete(name)
        for name in (names.agency_intake, names.agency_acks):
            await channel.exchange_delete(name)
    finally:
        await connection.close()


# -- a node of the cluster killed, another stopped --------------------------------------------------

CLUSTER_ENVELOPES = 4000


@pytest.fixture(scope="module")
def cluster_urls() -> list[str]:
    """The cluster, started once for the module and left running for the next one."""
    return start_cluster()


def _cluster_config(path: Path, pki: Path, prefix: str, database_url: str, nodes: list[str]) -> Path:
    """The example province on *nodes* of the cluster, tried in that order; AMQP_SENDER over AMQP."""
    write_config(path, pki, prefix=prefix, database_url=database_url)
    text = path.read_text(encoding="utf-8")
    amqp = f'url = "{SYSTEM_BROKER}"\n'
    agency = f'organ_id = "{AMQP_SENDER}"\n'
    assert amqp in text
    assert agency in text
    listed = ", ".join(f'"{n}"' for n in nodes)
    text = text.replace(
        amqp, f'url = "{nodes[0]}"\nnodes = [{listed}]\nmanagement_url = "{CLUSTER_MANAGEMENT}"\n', 1
    )
    text = text.replace(agency, f'{agency}transport = "amqp"\n', 1)
    path.write_text(text, encoding="utf-8")
    return path


@pytest_asyncio.fixture
async def cluster_province(
    cluster_urls: list[str], tmp_path: Path, pki_dir: Path
) -> AsyncIterator[tuple[list[Path], Settings, str]]:
    """Two configuration files of one province on the cluster (one prefix, one fresh PostgreSQL
    database): the first tries nodes 1, 2, 3, the second nodes 2, 3, 1. Its settings, and its DSN.
    Afterwards every node runs again, and the prefix's objects are gone from the cluster."""
    prefix = f"test-cl-{uuid.uuid4().hex[:8]}"
    async with fresh_database("postgresql", tmp_path) as url:
        configs = [
            _cluster_config(tmp_path / f"province-{i}.toml", pki_dir, prefix, url, order)
            for i, order in enumerate([cluster_urls, [*cluster_urls[1:], cluster_urls[0]]], start=1)
        ]
        settings = load_settings(configs[0])
        try:
            yield configs, settings, url.replace("postgresql+asyncpg://", "postgresql://", 1)
        finally:
            down = [n for n in NODES if n not in await asyncio.to_thread(running_nodes)]
            for n in down:  # never leave the cluster degraded for the next test
                await asyncio.to_thread(restart_node, n)
            await _delete_amqp_agency(settings)
            await delete_broker_objects(settings)
            await delete_broker_objects(_with_broker(settings, SYSTEM_BROKER))


async def _main_leader(names: BrokerNames) -> tuple[int, Counter[int]]:
    """The node that leads most of the prefix's quorum queues (the outbound queue and the inboxes)."""
    inboxes = {ALIASES.get(r, r) for r in RECIPIENTS}
    queues = [names.outbound_queue, names.agency_intake, *(names.inbox(OrganId.parse(a)) for a in inboxes)]
    leaders = await asyncio.gather(*(asyncio.to_thread(queue_leader, q) for q in queues))
    counts = Counter(leaders)
    return counts.most_common(1)[0][0], counts


async def test_a_node_killed_and_another_stopped_mid_stream_loses_nothing(
    cluster_province: tuple[list[Path], Settings, str], tmp_path: Path
) -> None:
    """Two gateways, one on node 1 and one on node 2, take CLUSTER_ENVELOPES over HTTP (16 in flight)
    and an AMQP agency's envelopes; an eighth of the way in, the node leading most of the prefix's quorum
    queues gets SIGKILL and is started again 3 s later, then another node is stopped gracefully (and
    started again only once everything is checked)."""
    configs, settings, dsn = cluster_province
    started = time.monotonic()
    await asyncio.to_thread(_amqp_users, configs[0])
    servers = [
        ServeProcess(config, free_port(), tmp_path / f"serve-{i}.log") for i, config in enumerate(configs, 1)
    ]
    for server in servers:
        server.start()
    for server in servers:
        await server.wait_ready()
    first_nodes = [str(server.events("broker.connected")[0]["node"]) for server in servers]
    assert first_nodes == ["127.0.0.1:5681", "127.0.0.1:5682"]  # one on node 1, the other on node 2
    leader, leaders = await _main_leader(BrokerNames(settings.amqp.prefix))
    # Stopped next: a node a gateway started on, not the one killed (so that both gateways move).
    stopped = next(n for n in (1, 2) if n != leader)
    alive = next(n for n in NODES if n != stopped)
    timeline: list[str] = []

    async def kill_restart_stop() -> None:
        t0 = time.monotonic()
        await asyncio.to_thread(kill_node, leader)
        timeline.append(f"{time.monotonic() - t0:.1f}s killed node {leader}")
        await asyncio.sleep(3.0)
        await asyncio.to_thread(restart_node, leader)
        timeline.append(f"{time.monotonic() - t0:.1f}s node {leader} back")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stop_node, stopped)
        timeline.append(f"{time.monotonic() - t0:.1f}s stopped node {stopped}")
        assert await asyncio.to_thread(running_nodes) == sorted({*NODES} - {stopped})

    # The AMQP agency starts on the node killed, and moves to the node stopped next: it loses both.
    amqp = AmqpSender(settings.amqp.prefix, [leader, stopped, *({*NODES} - {leader, stopped})])
    stop_amqp = asyncio.Event()
    amqp_task = asyncio.create_task(amqp.stream(stop_amqp))
    try:
        try:
            result, done_at, exited = await _stream_disrupted(
                servers,
                _stream(11, CLUSTER_ENVELOPES),
                CLUSTER_ENVELOPES // 8,
                kill_restart_stop,
                within_s=150,
            )
        finally:
            stop_amqp.set()
            await amqp_task
        streamed_s = time.monotonic() - started
        assert exited == {}  # neither gateway died under the broker's failures
        assert len(result.accepted) == CLUSTER_ENVELOPES
        # The disruption was over while envelopes were still arriving: all of it happened mid-stream.
        assert 0 < done_at < CLUSTER_ENVELOPES, (done_at, timeline)
        names = BrokerNames(settings.amqp.prefix)
        await _all_delivered_once(
            settings,
            dsn,
            {**result.accepted, **amqp.accepted},
            amqp_url(alive),
            more_queues=(names.agency_intake, names.outbound_queue),
        )
        assert [server.process.poll() for server in servers if server.process] == [None, None]
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0, 0]  # each stopped cleanly on SIGTERM: the processes that started
    assert all(len(server.events("node.started")) == 1 for server in servers)
    moves = [len(server.events("broker.next_node")) for server in servers]
    republished = [len(server.events("publisher.republish")) for server in servers]
    accepted = [len(server.events("send.accepted")) for server in servers]
    amqp_accepted = [len(server.events("agency_intake.accepted")) for server in servers]
    print(
        f"\n{CLUSTER_ENVELOPES} envelopes over HTTP and {len(amqp.accepted)} over AMQP, "
        f"{sum(len(r) for r in [*result.accepted.values(), *amqp.accepted.values()])} deliveries in "
        f"{streamed_s:.0f} s; leaders {dict(leaders)}; {'; '.join(timeline)}; disruption over at "
        f"{done_at} accepted; accepted per gateway HTTP {accepted} AMQP {amqp_accepted}; HTTP 503s "
        f"{result.unavailable}, transport errors {result.transport_errors}; AMQP failed attempts "
        f"{dict(amqp.failures)}, reconnects {amqp.reconnects}; republishes {republished}; "
        f"node moves {moves}"
    )
    assert sum(moves) > 0  # at least one gateway went to another node
    assert all(n > 0 for n in accepted)  # both gateways took the stream
    assert len(amqp.accepted) > 0


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
