"""Integration fixtures: the real RabbitMQ (scripts/services.sh starts it), a fresh name prefix per test.

No fakes here. A missing broker fails the tests loudly instead of skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from adapters.rabbitmq import BrokerNames, declare_topology, open_channel
from bus.topology import Topology, load_topology
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
    queues = [
        names.dead_letter_queue,
        names.outbound_queue,
        *(names.retry_queue(names.outbound_queue, d) for d in TEST_RETRY_DELAYS),
        *(names.inbox(a.organ_id) for a in topology.agencies),
    ]
    for queue in queues:
        await cleanup.queue_delete(queue)
    for exchange in (names.deliver_exchange, names.dead_letter_exchange):
        await cleanup.exchange_delete(exchange)
    await cleanup.close()


@pytest_asyncio.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    ch = await open_channel(connection)
    yield ch
    await ch.close()
