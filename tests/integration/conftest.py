"""Integration fixtures: the real RabbitMQ (scripts/services.sh starts it), a fresh name prefix per test.

No fakes here. A missing broker fails the tests loudly instead of skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from adapters.rabbitmq import BrokerNames, declare_topology, open_channel
from bus.pki import init_pki
from bus.settings import Settings, load_settings, load_topology
from bus.topology import Agency, Topology
from tests.conftest import ROOT

AMQP_URL = os.environ.get("BUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEST_RETRY_DELAYS = (300, 600)  # milliseconds: the real tiers are 5 s, 30 s, 5 min


@pytest.fixture(scope="session")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


@pytest_asyncio.fixture
async def connection(request: pytest.FixtureRequest) -> AsyncIterator[AbstractRobustConnection]:
    try:
        conn = await aio_pika.connect_robust(
            AMQP_URL, client_properties={"connection_name": request.node.name}, timeout=10
        )
    except (ConnectionError, OSError) as exc:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} ({exc}): run scripts/services.sh")
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def names(connection: AbstractRobustConnection, topology: Topology) -> AsyncIterator[BrokerNames]:
    """A fresh prefix, declared; every queue and exchange under it is deleted afterwards."""
    names = BrokerNames(prefix=f"test-{uuid.uuid4().hex[:10]}")
    channel = await connection.channel()
    await declare_topology(channel, topology, names, retry_delays=TEST_RETRY_DELAYS)
    yield names
    cleanup = await connection.channel()
    await _delete_declared(cleanup, names, topology.agencies, TEST_RETRY_DELAYS)
    await cleanup.close()


async def _delete_declared(
    channel: AbstractChannel, names: BrokerNames, agencies: Sequence[Agency], delays: Sequence[int]
) -> None:
    """Delete every queue and exchange :func:`declare_topology` made under *names*."""
    queues = [
        names.dead_letter_queue,
        names.outbound_queue,
        names.axis_inbound_queue,
        *(names.retry_queue(names.outbound_queue, d) for d in delays),
        *(names.inbox(a.organ_id) for a in agencies),
    ]
    for queue in queues:
        await channel.queue_delete(queue)
    for exchange in (names.deliver_exchange, names.dead_letter_exchange):
        await channel.exchange_delete(exchange)


@pytest_asyncio.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    ch = await open_channel(connection)
    yield ch
    await ch.close()


# -- a whole bus node on the real services -----------------------------------------------------------

PG_ADMIN_DSN = os.environ.get("BUS_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/bus_test")
EXAMPLE = ROOT / "config" / "example-province.toml"


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development PKI for the example province (one per test session)."""
    out = tmp_path_factory.mktemp("pki")
    init_pki(load_topology(EXAMPLE), out, progress=lambda _line: None)
    return out


def write_config(
    path: Path, pki: Path, *, prefix: str, database_url: str, extra: str = "", example: Path = EXAMPLE
) -> Path:
    """The example province's file, pointed at *pki*, a broker prefix and a database; its national
    axis section (the file's last) is cut off: a test that wants one passes it in *extra*."""
    text = example.read_text(encoding="utf-8").split("\n[national_axis]\n", 1)[0]
    text = text.replace("../demo-out/pki/", f"{pki}/")
    text = text.replace('prefix = "bus"', f'prefix = "{prefix}"')
    text = text.replace('url = "sqlite+aiosqlite:///demo-out/bus.db"', f'url = "{database_url}"')
    text = text.replace("port = 8080", "port = 8080\ndrain_s = 0")  # no load balancer in front
    path.write_text(text + extra, encoding="utf-8")
    return path


@asynccontextmanager
async def fresh_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A SQLAlchemy URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"
        return
    name = f"bus_t_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}): run scripts/services.sh")
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def delete_broker_objects(settings: Settings) -> None:
    """Remove every queue and exchange a node declared under its prefix."""
    connection = await aio_pika.connect(settings.amqp.url, timeout=10)
    channel = await connection.channel()
    await _delete_declared(
        channel, BrokerNames(settings.amqp.prefix), settings.agencies, settings.national_axis.retry_delays_ms
    )
    await connection.close()


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def node_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pki_dir: Path
) -> AsyncIterator[Settings]:
    """Settings of a node on the real broker (fresh prefix) and a fresh database of each kind."""
    async with fresh_database(request.param, tmp_path) as url:
        config = write_config(
            tmp_path / "province.toml", pki_dir, prefix=f"test-{uuid.uuid4().hex[:10]}", database_url=url
        )
        settings = load_settings(config)
        yield settings
        await delete_broker_objects(settings)
