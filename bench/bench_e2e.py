"""End to end: envelopes per second and latency from push to the recipient receiving it, over HTTP and
over AMQP, beside a raw aio-pika publish-with-confirm / consume-with-ack loop on the same broker, in the
same run.

Not a test. Run ``.venv/bin/python -m bench.bench_e2e`` (RabbitMQ with its management plugin, and
PostgreSQL up: scripts/services.sh) and copy the table into docs/performance.md. ``--smoke`` runs every
row with a handful of envelopes (tests/integration/test_bench_smoke.py: the benchmark must keep running;
its figures mean nothing). It deletes its queues, exchanges, broker users, database and files when it
ends, fails or is interrupted (SIGINT); whatever is left under its broker prefixes then goes through
RabbitMQ's management API, which answers even when the broker takes no new AMQP connection (see
:func:`sweep`).

* **bus (a) HTTP push + HTTP pull, 8 KB**: agency systems push signed ~8 KB envelopes to real ``bus
  serve`` processes over HTTP (the province must sign, so each signature is verified, then traced and
  countersigned); recipients pull as agency systems do: list (the manifest), fetch 8 at a time, one
  ``POST /v1/acks`` for the batch. Latency: push sent → fetched by the recipient.
* **bus (b) AMQP push + AMQP pull, 8 KB**: the same envelopes, sent by the province as its own RabbitMQ
  user (made by ``bus amqp-users``) to the agency intake, each waiting for the bus's answer (direct
  reply-to; "in flight" counts envelopes awaiting their answer); the recipients, AMQP agencies of a second
  bench district, consume their delivery queues and acknowledge each envelope ``done`` over AMQP, then to
  RabbitMQ, with the integrators' example client (docs/examples/amqp_agency_client.py). Latency:
  publish → received by the recipient. The run ends when every delivery is received and its
  acknowledgement answered.
* **bus, fan-out 50**: each envelope to 50 communes of one district over HTTP; latency per delivery.
* **raw aio-pika**: the same 8 KB bodies published with confirms to a quorum queue and consumed with
  acks (one queue; for the fan-out row, a fanout exchange to 50 quorum queues). Latency: publish →
  delivered to the consumer. This is the floor the bus is built on: no HTTP, parsing, signatures or
  database.

Each bus row is compared with the raw row of the same concurrency ("X% of the raw loop's delivery
rate"). Costs per delivery: CPU of the bus, of this load generator, of RabbitMQ and of PostgreSQL (from
/proc); PostgreSQL's commits (pg_stat_database: a read outside a transaction counts as one, though it
flushes nothing), its WAL flushes (pg_stat_wal: the durable commits; the whole server's) and its
statements (pg_stat_statements: every round trip, BEGIN and COMMIT included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import asyncpg
import httpx
from lxml import etree

from adapters.http.client import AgencyClient
from adapters.rabbitmq import BrokerNames
from bus.dsig import load_certificates, load_private_key, sign_tree
from bus.pki import init_pki
from bus.settings import Settings, load_settings
from bus.xmlparse import parse_untrusted
from entrypoints.cli_amqp import management_api, wanted_users
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, fresh_database, write_config
from tests.integration.example_client import CLIENT
from tests.integration.processes import ServeProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("BUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PROVINCE = "000.00.00.H99"
FANOUT = 50  # communes of the bench's district: the fan-out row sends to all of them
# The AMQP rows' recipients: a second bench district and its communes, AMQP agencies (the HTTP rows keep
# the example's HTTP agencies). The province sends the AMQP rows as its broker user, the HTTP rows with
# its API secret (an AMQP agency may use the HTTP API too: docs/amqp-agencies.md).
AMQP_DISTRICT = "000.00.41.H99"
AMQP_COMMUNES = 3
PULL_CONCURRENCY = 8  # envelopes an HTTP puller fetches at once (as the example AMQP client handles)


@dataclass
class Run:
    label: str
    envelopes: int
    deliveries: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    # What the run cost, from the kernel and from PostgreSQL's own statistics (None where not measured:
    # the raw loop has no bus and no database).
    bus_cpu_s: float | None = None
    generator_cpu_s: float | None = None
    broker_cpu_s: float | None = None  # RabbitMQ (the node listening on the bench's AMQP port)
    database_cpu_s: float | None = None  # PostgreSQL (every server process, and those that ended)
    commits: int | None = None  # transactions committed, read-only ones (a read outside BEGIN) included
    statements: int | None = None
    wal_flushes: int | None = None  # WAL fsyncs of the whole server (pg_stat_wal): durable commits
    # A bus row's raw aio-pika row (same bodies' size and concurrency), for "X% of the raw loop".
    baseline: str | None = None

    @property
    def rate(self) -> float:
        return self.envelopes / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of *pid* so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu_with_children_s(pid: int) -> float:
    """As :func:`_process_cpu_s`, with the CPU of its children that ended (PostgreSQL's backends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _broker_pid() -> int | None:
    """The process listening on the bench's AMQP port (``ss``), or None."""
    port = urlsplit(AMQP_URL).port or 5672
    try:
        out = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"pid=(\d+)", out)
    return int(found.group(1)) if found else None


def _services_cpu_s() -> tuple[float | None, float | None]:
    """CPU seconds so far of RabbitMQ and of PostgreSQL (None where not found: not on this machine)."""
    broker = _broker_pid()
    database: float | None = None
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            if "(postgres)" in text:
                pid = int(stat.parent.name)
                # the postmaster (its parent is not postgres) also counts its ended children
                parent = int(text.rsplit(")", 1)[1].split()[1])
                own = _process_cpu_s(pid)
                if "(postgres)" not in Path(f"/proc/{parent}/stat").read_text():
                    own = _process_cpu_with_children_s(pid)
                database = (database or 0.0) + own
    try:
        return (None if broker is None else _process_cpu_s(broker)), database
    except OSError:
        return None, database


def _servers_cpu_s(servers: list[ServeProcess]) -> float:
    return sum(_process_cpu_s(s.process.pid) for s in servers if s.process is not None)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Counters:
    """PostgreSQL's own count of the bench database's commits and of the statements it ran (the
    second from pg_stat_statements, when the server preloads it; scripts/services.sh asks it to)."""

    dsn: str | None

    async def wal_flushes(self) -> int | None:
        """The server's WAL syncs so far (pg_stat_wal, PostgreSQL 14+): what a durable commit costs;
        a read-only transaction's commit flushes nothing."""
        if self.dsn is None:
            return None
        connection = await asyncpg.connect(self.dsn)
        try:
            with contextlib.suppress(asyncpg.PostgresError):
                return int(await connection.fetchval("SELECT wal_sync FROM pg_stat_wal"))
            return None
        finally:
            await connection.close()

    async def read(self) -> tuple[int | None, int | None]:
        if self.dsn is None:
            return None, None
        connection = await asyncpg.connect(self.dsn)
        try:
            name = await connection.fetchval("SELECT current_database()")
            commits = await connection.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name
            )
            statements = None
            with contextlib.suppress(asyncpg.PostgresError):  # not preloaded: commits only
                await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                statements = await connection.fetchval(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                    name,
                )
            return int(commits), None if statements is None else int(statements)
        finally:
            await connection.close()


class Meter:
    """What one bus run costs, between :meth:`start` and :meth:`run`: the ``bus serve`` processes' CPU,
    this process's CPU (the load generator), and PostgreSQL's commits and statements."""

    def __init__(self, servers: list[ServeProcess], counters: Counters | None) -> None:
        self.servers = servers
        self.counters = counters or Counters(None)
        self._before: tuple[int | None, int | None, float, float] = (None, None, 0.0, 0.0)
        self._services_before: tuple[float | None, float | None] = (None, None)
        self._wal_before: int | None = None

    async def start(self) -> None:
        commits, statements = await self.counters.read()
        self._before = (commits, statements, _servers_cpu_s(self.servers), _own_cpu_s())
        self._services_before = _services_cpu_s()
        self._wal_before = await self.counters.wal_flushes()

    async def run(
        self, label: str, envelopes: int, deliveries: int, seconds: float, latencies: list[float]
    ) -> Run:
        commits_before, statements_before, bus_cpu_before, own_cpu_before = self._before
        bus_cpu = _servers_cpu_s(self.servers) - bus_cpu_before
        own_cpu = _own_cpu_s() - own_cpu_before
        (broker_before, database_before), (broker_after, database_after) = (
            self._services_before,
            _services_cpu_s(),
        )
        commits_after, statements_after = await self.counters.read()
        wal_after = await self.counters.wal_flushes()
        return Run(
            label,
            envelopes,
            deliveries,
            seconds,
            latencies,
            bus_cpu_s=bus_cpu,
            generator_cpu_s=own_cpu,
            broker_cpu_s=None
            if broker_after is None or broker_before is None
            else broker_after - broker_before,
            database_cpu_s=(
                None
                if database_after is None or database_before is None
                else database_after - database_before
            ),
            commits=None
            if commits_after is None or commits_before is None
            else commits_after - commits_before,
            wal_flushes=None
            if wal_after is None or self._wal_before is None
            else wal_after - self._wal_before,
            statements=(
                None
                if statements_after is None or statements_before is None
                else statements_after - statements_before
            ),
        )


def _agency(code: str, name: str, level: str, parent: str, *, amqp: bool = False) -> str:
    transport = 'transport = "amqp"\n' if amqp else ""
    return (
        f'\n[[agencies]]\norgan_id = "{code}"\nname = "{name}"\nlevel = "{level}"\nparent = "{parent}"\n'
        f'secret = "demo-only-{code}"\n{transport}'
    )


def _bench_province(communes: int, amqp_communes: int = AMQP_COMMUNES) -> str:
    """The example province plus a district with *communes* communes (for the fan-out row) and a second
    district with *amqp_communes* communes, all AMQP agencies (for the AMQP rows); the province sends over
    AMQP too (``transport = "amqp"``: its broker user; its HTTP API secret still sends the HTTP rows)."""
    text = (ROOT / "config" / "example-province.toml").read_text(encoding="utf-8")
    marked = f'organ_id = "{PROVINCE}"\n'
    assert marked in text, f"the example province has no agency {PROVINCE}"
    text = text.replace(marked, f'{marked}transport = "amqp"\n', 1)
    extra = [_agency("000.00.40.H99", "Ủy ban nhân dân huyện Thử Tải", "district", PROVINCE)]
    for n in range(1, communes + 1):
        extra.append(
            _agency(f"000.{n:02d}.40.H99", f"Ủy ban nhân dân xã Thử Tải {n}", "commune", "000.00.40.H99")
        )
    extra.append(_agency(AMQP_DISTRICT, "Ủy ban nhân dân huyện Thử AMQP", "district", PROVINCE, amqp=True))
    for n in range(1, amqp_communes + 1):
        code = f"000.{n:02d}.{AMQP_DISTRICT.split('.')[2]}.H99"
        extra.append(_agency(code, f"Ủy ban nhân dân xã Thử AMQP {n}", "commune", AMQP_DISTRICT, amqp=True))
    head, sep, services = text.partition("# Services of this node")
    return head + "".join(extra) + "\n" + sep + services


def _amqp_recipients(amqp_communes: int = AMQP_COMMUNES) -> list[list[str]]:
    district = AMQP_DISTRICT.split(".")[2]
    return [[AMQP_DISTRICT], *([f"000.{n:02d}.{district}.H99"] for n in range(1, amqp_communes + 1))]


def _signed_envelopes(pki: Path, count: int, recipients: list[list[str]], size: int, tag: str) -> list[bytes]:
    key = load_private_key(pki / "nodes" / f"{PROVINCE}.key")
    [cert] = load_certificates(pki / "nodes" / f"{PROVINCE}.pem")
    out = []
    for n in range(count):
        body = make_document(PROVINCE, recipients[n % len(recipients)], n + 1, notation=tag, padding=size)
        tree = parse_untrusted(body)
        sign_tree(tree, key, cert)
        out.append(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))
    return out


async def bus_run(
    label: str,
    servers: list[ServeProcess],
    pki: Path,
    recipients: list[list[str]],
    count: int,
    concurrency: int,
    counters: Counters | None = None,
) -> Run:
    tag = f"B{uuid.uuid4().hex[:6]}"
    envelopes = _signed_envelopes(pki, count, recipients, 6000, tag)
    pushed: dict[str, float] = {}
    latencies: list[float] = []
    agencies = sorted({r for group in recipients for r in group})
    expected = sum(len(recipients[n % len(recipients)]) for n in range(count))
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency + len(agencies))
    senders = [AgencyClient(s.url, PROVINCE, f"demo-only-{PROVINCE}".encode(), timeout=60) for s in servers]
    for sender in senders:
        sender._http = httpx.AsyncClient(base_url=sender._http.base_url, timeout=60, limits=limits)

    async def pusher(queue: asyncio.Queue[tuple[int, bytes]]) -> None:
        while not queue.empty():
            n, body = queue.get_nowait()
            pushed[f"{PROVINCE},2026/11/20,{n + 1}/{tag}"] = time.perf_counter()
            await senders[n % len(senders)].send(body, retries=5, backoff_s=0.2)

    async def puller(agency: str, index: int) -> None:
        client = AgencyClient(
            servers[index % len(servers)].url, agency, f"demo-only-{agency}".encode(), timeout=60
        )
        slots = asyncio.Semaphore(PULL_CONCURRENCY)
        try:
            while not done.is_set():
                items = await client.inbox(limit=200)
                if not items:
                    await asyncio.sleep(0.01)
                    continue

                # As a document system pulls a batch: the list is the manifest, the envelopes are
                # fetched a few at a time, and the batch is acknowledged with one request.
                async def fetch(item: dict[str, Any]) -> None:
                    async with slots:
                        await client.fetch(int(str(item["id"])))
                    latencies.append((time.perf_counter() - pushed[str(item["document_id"])]) * 1000)

                await asyncio.gather(*(fetch(item) for item in items))
                for start in range(0, len(items), 500):
                    answers = await client.acknowledge_many(
                        [(int(str(item["id"])), "done", None) for item in items[start : start + 500]]
                    )
                    if any(a["status"] != 200 for a in answers):
                        raise RuntimeError(f"{label}: acknowledgements refused: {answers}")
                if len(latencies) >= expected:
                    done.set()
        finally:
            await client.aclose()

    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for n, body in enumerate(envelopes):
        queue.put_nowait((n, body))
    meter = Meter(servers, counters)
    await meter.start()
    started = time.perf_counter()
    pullers = [asyncio.create_task(puller(a, i)) for i, a in enumerate(agencies)]
    try:
        await asyncio.gather(*(pusher(queue) for _ in range(concurrency)))
        waiter = asyncio.create_task(done.wait())
        await asyncio.wait([waiter, *pullers], timeout=600, return_when=asyncio.FIRST_COMPLETED)
        seconds = time.perf_counter() - started
        if not done.is_set():  # a puller failed (its exception is raised here) or time ran out
            for task in pullers:
                if task.done():
                    task.result()
            raise TimeoutError(f"{label}: only {len(latencies)} of {expected} deliveries pulled")
        for task in pullers:
            await task
    finally:
        done.set()
        for task in pullers:
            task.cancel()
        await asyncio.gather(*pullers, return_exceptions=True)
        for sender in senders:
            await sender.aclose()
    print(f"  {label}: {count} envelopes in {seconds:.1f} s", file=sys.stderr, flush=True)
    return await meter.run(label, count, expected, seconds, latencies)


class AmqpAgencies:
    """The bench's AMQP agencies as their document systems see them: the broker's address with each
    agency's own user and password (those ``bus amqp-users`` gives it), and the axis's prefix."""

    def __init__(self, settings: Settings) -> None:
        names = BrokerNames(settings.amqp.prefix)
        broker = urlsplit(settings.amqp.url)
        where = broker.netloc.rpartition("@")[2] + (broker.path or "/")
        self.prefix = names.prefix
        self.urls = {
            user.name.removeprefix(f"{names.prefix}."): (
                f"amqp://{quote(user.name, safe='')}:{quote(user.password, safe='')}@{where}"
            )
            for user, _source in wanted_users(settings, names)
        }

    def connect(self, agency: str) -> Any:
        """The example client's connection of *agency* (``async with``)."""
        return CLIENT.AgencyConnection(self.urls[agency], agency, prefix=self.prefix, answer_timeout_s=60)


def make_amqp_users(config: Path) -> None:
    """``bus amqp-users --config CONFIG``, as an operator runs it: each AMQP agency's broker user."""
    made = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "amqp-users", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"bus amqp-users exited {made.returncode}: {made.stderr.strip()}")


async def delete_amqp_objects(settings: Settings) -> None:
    """What the AMQP agencies add to a node's broker objects: the agency intake and acknowledgements
    (exchanges and queues) and each agency's delivery queue."""
    names = BrokerNames(settings.amqp.prefix)
    connection = await aio_pika.connect(settings.amqp.url, timeout=10)
    try:
        channel = await connection.channel()
        for agency in settings.agencies:
            await channel.queue_delete(names.agency_queue(agency.organ_id))  # none there: no error
        for name in (names.agency_intake, names.agency_acks):
            await channel.queue_delete(name)
            await channel.exchange_delete(name)
    finally:
        await connection.close()


async def sweep(settings: Settings, prefix: str) -> list[str]:
    """Delete every queue, exchange and broker user whose name starts with *prefix* through RabbitMQ's
    management API; what it deleted. The bench's last clean-up, and the one that works when the broker
    takes no new AMQP connection: with RabbitMQ's default 1024 open files, some 300 quorum queues
    reserve all its file handles and a new connection waits for one forever (until queues are deleted)."""
    api = management_api(settings)
    http = api._http  # the same credentials and base URL as bus amqp-users
    vhost = quote(api.vhost, safe="")
    deleted = []
    try:
        for kind in ("queues", "exchanges"):
            listed = await http.get(f"/{kind}/{vhost}", params={"columns": "name"})
            listed.raise_for_status()
            for entry in listed.json():
                if str(entry["name"]).startswith(prefix):
                    gone = await http.delete(f"/{kind}/{vhost}/{quote(str(entry['name']), safe='')}")
                    gone.raise_for_status()
                    deleted.append(f"{kind[:-1]} {entry['name']}")
        for user in await api.users():
            if str(user.get("name", "")).startswith(prefix):
                await api.delete_user(str(user["name"]))
                deleted.append(f"user {user['name']}")
    finally:
        await api.aclose()
    return deleted


async def clean_up(settings: Settings, prefix: str, over_amqp: Callable[[], Awaitable[None]]) -> None:
    """*over_amqp* (the usual deletions), then :func:`sweep` of *prefix* for whatever is left; a queue or
    exchange the sweep finds is said on stderr (the AMQP deletions missed it, or could not run)."""
    try:
        await over_amqp()
    except Exception as exc:  # not CancelledError: an interrupted clean-up still ends in the sweep
        print(f"  clean-up over AMQP failed ({exc!r}); sweeping {prefix}*", file=sys.stderr, flush=True)
    finally:
        try:
            swept = await sweep(settings, prefix)
        except httpx.TransportError as exc:  # a broker without the management plugin (scripts/cluster.sh)
            print(f"  no management API ({exc!r}): sweep of {prefix}* skipped", file=sys.stderr, flush=True)
            swept = []
        left = [name for name in swept if not name.startswith("user ")]
        if left:
            print(f"  deleted through the management API: {', '.join(left)}", file=sys.stderr, flush=True)


async def amqp_run(
    label: str,
    servers: list[ServeProcess],
    agencies: AmqpAgencies,
    pki: Path,
    recipients: list[list[str]],
    count: int,
    concurrency: int,
    counters: Counters | None = None,
) -> Run:
    """The province sends *count* signed envelopes over AMQP, *concurrency* awaiting their answers at a
    time; each recipient takes its delivery queue with the example client's ``receive``, acknowledging
    each envelope ``done`` to the axis (waiting for the answer), then to RabbitMQ."""
    tag = f"A{uuid.uuid4().hex[:6]}"
    envelopes = _signed_envelopes(pki, count, recipients, 6000, tag)
    pushed: dict[str, float] = {}
    latencies: list[float] = []
    received: set[str] = set()  # "<bus id>|<agency>": a delivery that comes twice is counted once
    acknowledged: set[str] = set()  # of those, the ones whose acknowledgement the axis answered
    codes = sorted({r for group in recipients for r in group})
    expected = sum(len(recipients[n % len(recipients)]) for n in range(count))
    done, stop = asyncio.Event(), asyncio.Event()

    class Recipient(CLIENT.AgencyConnection):  # type: ignore[misc]
        """The example client; each acknowledgement it has answered counts toward the run's end."""

        async def acknowledge(self, bus_id: str, state: str, reason: str | None = None) -> dict[str, Any]:
            answer: dict[str, Any] = await super().acknowledge(bus_id, state, reason)
            key = f"{bus_id}|{self.agency}"
            if key in received:  # receive() itself stops on an answer other than 200 or already-final
                acknowledged.add(key)
                if len(acknowledged) >= expected:
                    done.set()
            return answer

    async def send(province: Any, queue: asyncio.Queue[tuple[int, bytes]]) -> None:
        while not queue.empty():
            n, body = queue.get_nowait()
            pushed[f"{PROVINCE},2026/11/20,{n + 1}/{tag}"] = time.perf_counter()
            answer = await province.send_until_answered(body)
            if answer["status"] != 202:
                raise RuntimeError(f"{label}: envelope {n + 1} refused: {answer}")

    async def take(recipient: Any) -> None:
        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> str:
            now = time.perf_counter()
            sent = pushed.get(CLIENT.header(message, "x-bus-document-id"))
            key = f"{CLIENT.header(message, 'x-bus-id')}|{recipient.agency}"
            if sent is not None and key not in received:
                received.add(key)
                latencies.append((now - sent) * 1000)
            return "done"

        while not stop.is_set():
            await recipient.receive(keep, idle_s=1.0)

    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for n, body in enumerate(envelopes):
        queue.put_nowait((n, body))
    async with contextlib.AsyncExitStack() as connections:
        province = await connections.enter_async_context(agencies.connect(PROVINCE))
        takers = [
            await connections.enter_async_context(
                Recipient(agencies.urls[code], code, prefix=agencies.prefix, answer_timeout_s=60)
            )
            for code in codes
        ]
        meter = Meter(servers, counters)
        await meter.start()
        started = time.perf_counter()
        receivers = [asyncio.create_task(take(t)) for t in takers]
        waiter = asyncio.create_task(done.wait())
        try:
            await asyncio.gather(*(send(province, queue) for _ in range(concurrency)))
            await asyncio.wait([waiter, *receivers], timeout=600, return_when=asyncio.FIRST_COMPLETED)
            seconds = time.perf_counter() - started
            if not done.is_set():  # a receiver failed (its exception is raised here) or time ran out
                for task in receivers:
                    if task.done():
                        task.result()
                raise TimeoutError(
                    f"{label}: {len(received)} of {expected} deliveries received, {len(acknowledged)} "
                    "acknowledged"
                )
            run = await meter.run(label, count, expected, seconds, latencies)
            stop.set()  # each receiver returns after a quiet second, every message acknowledged
            await asyncio.wait_for(asyncio.gather(*receivers), timeout=30)
        finally:
            stop.set()
            waiter.cancel()
            for task in receivers:
                task.cancel()
            await asyncio.gather(waiter, *receivers, return_exceptions=True)
    print(f"  {label}: {count} envelopes in {seconds:.1f} s", file=sys.stderr, flush=True)
    return run


async def raw_run(settings: Settings, label: str, count: int, queues: int, concurrency: int) -> Run:
    """Publish *count* 8 KB messages with confirms (``concurrency`` in flight) and consume with acks."""
    body = os.urandom(8000)
    prefix = f"bench-raw-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.{i}" for i in range(queues)]
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    expected = count * queues

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        latencies.append((time.perf_counter() - sent[str(message.message_id)]) * 1000)
        await message.ack()
        if len(latencies) >= expected:
            done.set()

    gate = asyncio.Semaphore(concurrency)

    async def publish(exchange: aio_pika.abc.AbstractExchange, n: int) -> None:
        async with gate:
            message_id = f"{prefix}-{n}"
            sent[message_id] = time.perf_counter()
            await exchange.publish(
                aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="",
                mandatory=True,
            )

    connection = await aio_pika.connect(AMQP_URL, timeout=15)  # fails, rather than retry forever
    try:
        publish_channel = await connection.channel(publisher_confirms=True)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=64)
        exchange = await publish_channel.declare_exchange(prefix, aio_pika.ExchangeType.FANOUT, durable=True)
        for name in names:
            queue = await consume_channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(prefix)
            await queue.consume(on_message)
        started = time.perf_counter()
        await asyncio.gather(*(publish(exchange, n) for n in range(count)))
        await asyncio.wait_for(done.wait(), timeout=600)
        seconds = time.perf_counter() - started
    finally:
        await connection.close()  # consumers first, or the broker cancels them as their queues go

        async def delete() -> None:
            admin = await aio_pika.connect(AMQP_URL, timeout=10)
            try:
                cleanup = await admin.channel()
                for name in names:
                    await cleanup.queue_delete(name)
                await cleanup.exchange_delete(prefix)
            finally:
                await admin.close()

        await clean_up(settings, prefix, delete)
    print(f"  {label}: {count} messages in {seconds:.1f} s", file=sys.stderr, flush=True)
    return Run(label, count, expected, seconds, latencies)


async def main(args: argparse.Namespace) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        pki = work / "pki"
        province = work / "bench-province.toml"
        province.write_text(_bench_province(FANOUT), encoding="utf-8")
        async with fresh_database(args.database, work) as url:
            # The tests' configuration: no [national_axis] (its CA file exists only after the demo).
            settings_file = write_config(
                work / "province.toml",
                pki,
                prefix=f"bench-{uuid.uuid4().hex[:8]}",
                database_url=url,
                example=province,
            )
            settings = load_settings(settings_file)
            init_pki(settings.topology, pki, progress=lambda _l: None)
            servers = [
                ServeProcess(settings_file, free_port(), work / f"serve-{i}.log", _sampler(args, i))
                for i in range(args.processes)
            ]
            dsn = (
                url.replace("postgresql+asyncpg://", "postgresql://", 1)
                if args.database == "postgresql"
                else None
            )
            try:
                if "amqp" in args.rows:
                    make_amqp_users(settings_file)
                if args.audit != "both":
                    os.environ["BUS_AUDIT__ENABLED"] = "true" if args.audit == "on" else "false"
                    await _start(servers)
                    return await _runs(args, settings, servers, AmqpAgencies(settings), pki, Counters(dsn))
                # The audit log's cost (issue 15 item 5): the same rows with it on and off, in one run,
                # alternating (on, off, on, off, ...) so that other load falls on both.
                runs: list[Run] = []
                once = argparse.Namespace(**{**vars(args), "repeat": 1})
                for _ in range(args.repeat):
                    for mode in ("on", "off"):
                        os.environ["BUS_AUDIT__ENABLED"] = "true" if mode == "on" else "false"
                        await _start(servers)
                        try:
                            done = await _runs(
                                once, settings, servers, AmqpAgencies(settings), pki, Counters(dsn)
                            )
                        finally:
                            for server in servers:
                                server.stop()
                        for run in done:
                            if run.baseline is not None:
                                run.label += f" [audit {mode}]"
                        runs += done
                return runs
            finally:
                os.environ.pop("BUS_AUDIT__ENABLED", None)
                for server in servers:
                    server.stop()

                async def delete() -> None:
                    await delete_broker_objects(settings)
                    await delete_amqp_objects(settings)

                await clean_up(settings, f"{settings.amqp.prefix}.", delete)  # the users too


async def _start(servers: list[ServeProcess]) -> None:
    for server in servers:
        server.start()
    for server in servers:
        await server.wait_ready()


def _sampler(args: argparse.Namespace, index: int) -> tuple[str, ...]:
    """``bus serve`` under bench/cpu_sampler.py when ``--cpu-profile DIR`` is given."""
    if args.cpu_profile is None:
        return ()
    args.cpu_profile.mkdir(parents=True, exist_ok=True)
    return ("-m", "bench.cpu_sampler", str(args.cpu_profile.resolve() / f"serve-{index}.folded"), "--")


async def _runs(
    args: argparse.Namespace,
    settings: Settings,
    servers: list[ServeProcess],
    agencies: AmqpAgencies,
    pki: Path,
    counters: Counters,
) -> list[Run]:
    """Each row *args.repeat* times, interleaved (raw, bus over HTTP, bus over AMQP, raw, ...) so that
    other load on the machine falls on all; the report takes the median of each row."""
    local = [["000.00.21.H99"], ["000.01.21.H99"], ["000.00.22.H99"], ["000.01.22.H99"]]
    over_amqp = _amqp_recipients()
    communes = [[f"000.{n:02d}.40.H99" for n in range(1, FANOUT + 1)]]
    rows = set(args.rows)
    if "http" in rows or "fanout" in rows:
        await bus_run("warm-up", servers, pki, local, args.warm_up, args.concurrency)
    if "amqp" in rows:
        await amqp_run("warm-up over AMQP", servers, agencies, pki, over_amqp, args.warm_up, args.concurrency)
    runs: list[Run] = []
    c = args.concurrency
    for _ in range(args.repeat):
        for concurrency in args.in_flight or (1, c):
            n = args.envelopes if concurrency > 1 else max(1, args.envelopes // 4)
            raw = await raw_run(settings, f"raw aio-pika, 8 KB, {concurrency} in flight", n, 1, concurrency)
            runs.append(raw)
            if "http" in rows:
                http = f"bus (a) HTTP push + HTTP pull, 8 KB signed, {concurrency} in flight"
                runs.append(await bus_run(http, servers, pki, local, n, concurrency, counters))
                runs[-1].baseline = raw.label
            if "amqp" in rows:
                amqp = f"bus (b) AMQP push + AMQP pull, 8 KB signed, {concurrency} in flight"
                runs.append(await amqp_run(amqp, servers, agencies, pki, over_amqp, n, concurrency, counters))
                runs[-1].baseline = raw.label
        if "fanout" not in rows:
            continue
        raw = await raw_run(
            settings, f"raw aio-pika, fan-out {FANOUT}, {c} in flight", args.fanout, FANOUT, c
        )
        runs.append(raw)
        runs.append(
            await bus_run(
                f"bus, fan-out {FANOUT}, {c} in flight", servers, pki, communes, args.fanout, c, counters
            )
        )
        runs[-1].baseline = raw.label
    return runs


def _median_runs(runs: list[Run]) -> list[Run]:
    """One run per label: the run of median delivery rate (its own latencies and costs with it)."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    chosen = []
    for same in by_label.values():
        ordered = sorted(same, key=lambda r: r.deliveries / r.seconds)
        chosen.append(ordered[len(ordered) // 2])
    return chosen


def _per_delivery(value: float | int | None, run: Run, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale / run.deliveries:.2f}"


def report(runs: list[Run], args: argparse.Namespace) -> None:
    cpu = platform.processor() or platform.machine()
    rabbitmqctl = shutil.which("rabbitmqctl")
    rabbit = (
        subprocess.run([rabbitmqctl, "version"], capture_output=True, text=True, check=False).stdout.strip()
        if rabbitmqctl
        else ""
    )
    print(
        f"\n{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}, RabbitMQ {rabbit or '?'}, "
        f"store {args.database}, {args.processes} bus serve process(es); load generator on the same machine\n"
    )
    rates = {
        label: [r.deliveries / r.seconds for r in runs if r.label == label]
        for label in {r.label for r in runs}
    }
    runs = _median_runs(runs)
    print(
        "| run | envelopes | deliveries | envelopes/s | deliveries/s (median of "
        f"{args.repeat}; all) | p50 ms | p99 ms | CPU ms / delivery: bus | generator | RabbitMQ "
        "| PostgreSQL | commits / delivery | WAL flushes / delivery | statements / delivery |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        every = ", ".join(f"{rate:.0f}" for rate in sorted(rates[run.label]))
        print(
            f"| {run.label} | {run.envelopes} | {run.deliveries} | {run.rate:.0f} | "
            f"{run.deliveries / run.seconds:.0f} ({every}) | {run.pct(0.5):.1f} | {run.pct(0.99):.1f} | "
            f"{_per_delivery(run.bus_cpu_s, run, 1000)} | {_per_delivery(run.generator_cpu_s, run, 1000)} | "
            f"{_per_delivery(run.broker_cpu_s, run, 1000)} | "
            f"{_per_delivery(run.database_cpu_s, run, 1000)} | "
            f"{_per_delivery(run.commits, run)} | {_per_delivery(run.wal_flushes, run)} | "
            f"{_per_delivery(run.statements, run)} |"
        )
    print()
    by_label = {run.label: run for run in runs}
    for bus in runs:
        if bus.baseline is not None:
            raw = by_label[bus.baseline]
            ratio = (bus.deliveries / bus.seconds) / (raw.deliveries / raw.seconds)
            print(f"- {bus.label}: {ratio:.0%} of the raw loop's delivery rate")
    for on in runs:
        if on.label.endswith(" [audit on]"):
            off = by_label.get(on.label.removesuffix(" [audit on]") + " [audit off]")
            if off is not None:
                change = (on.deliveries / on.seconds) / (off.deliveries / off.seconds) - 1
                print(f"- {on.label.removesuffix(' [audit on]')}: audit on {change:+.1%} against audit off")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=2000)
    parser.add_argument("--fanout", type=int, default=40, help="envelopes in the fan-out run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="bus serve processes")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--warm-up", type=int, default=50, help="envelopes sent before measuring")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row; the report gives the median")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=("http", "amqp", "fanout"),
        default=["http", "amqp", "fanout"],
        help="the bus rows to run (each beside its raw loop)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        nargs="+",
        help="concurrencies of the 8 KB rows (default 1 and --concurrency)",
    )
    parser.add_argument(
        "--cpu-profile",
        type=Path,
        metavar="DIR",
        help="run bus serve under bench/cpu_sampler.py; DIR gets its stacks and summary",
    )
    parser.add_argument(
        "--audit",
        choices=("on", "off", "both"),
        default="on",
        help="the audit log in bus serve; both: each row with it on and off, alternating (its cost)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few envelopes per row: checks that the benchmark runs"
    )
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.envelopes, arguments.fanout, arguments.concurrency, arguments.warm_up = 8, 2, 4, 4
        arguments.repeat = 1
    report(asyncio.run(main(arguments)), arguments)
