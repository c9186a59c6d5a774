"""A quorum queue keeps what it confirmed when the node that leads it dies (scripts/cluster.sh, issue 14).

The three local nodes (tests/integration/cluster.py) stand in for three broker machines: messages are
published with confirms through node 1, the queue's leader is killed with SIGKILL, and a consumer on a
surviving node must get every confirmed message. The killed node is started again before the test ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractConnection

from tests.integration.cluster import (
    NODES,
    amqp_url,
    kill_node,
    queue_leader,
    restart_node,
    running_nodes,
    start_cluster,
)

pytestmark = pytest.mark.asyncio

MESSAGES = 50


@pytest.fixture(scope="module")
def cluster_urls() -> list[str]:
    """The cluster, started once for the module and left running for the next one."""
    return start_cluster()


@pytest_asyncio.fixture
async def queue_name(cluster_urls: list[str]) -> AsyncIterator[str]:
    """A fresh queue name; the queue is deleted afterwards through whichever node answers."""
    name = f"test-{uuid.uuid4().hex[:10]}-cluster"
    yield name
    for url in cluster_urls:
        try:
            connection = await aio_pika.connect(url, timeout=10)
        except (ConnectionError, OSError, aiormq.exceptions.AMQPError):
            continue
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)
        return
    pytest.fail(f"no node of the cluster accepts a connection to delete queue {name}")


async def _connect(url: str, name: str) -> AbstractConnection:
    return await aio_pika.connect(url, client_properties={"connection_name": name}, timeout=10)


async def _drain(url: str, queue: str, expected: int, deadline_s: float = 60) -> list[bytes]:
    """Acknowledge and return every message of *queue*, read through *url*, until *expected* arrived
    or nothing more comes: while the queue elects a new leader, gets fail or find it empty for a while."""
    got: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expected and time.monotonic() < deadline:
        try:
            async with await _connect(url, "test_rabbit_cluster consumer") as connection:
                channel = await connection.channel()
                q = await channel.get_queue(queue, ensure=False)
                while len(got) < expected and time.monotonic() < deadline:
                    message = await q.get(fail=False, timeout=5)
                    if message is None:
                        await asyncio.sleep(0.5)
                        continue
                    await message.ack()
                    got.append(message.body)
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError):
            await asyncio.sleep(1)  # the queue has no leader yet: open a new channel and try again
    return got


async def test_cluster_has_three_running_nodes(cluster_urls: list[str]) -> None:
    assert cluster_urls == [amqp_url(n) for n in NODES]
    assert await asyncio.to_thread(running_nodes) == [1, 2, 3]


async def test_quorum_queue_loses_nothing_when_its_leader_is_killed(
    cluster_urls: list[str], queue_name: str
) -> None:
    bodies = [f"<document n='{i}'/>".encode() for i in range(MESSAGES)]
    async with await _connect(cluster_urls[0], "test_rabbit_cluster publisher") as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        for body in bodies:
            # With confirms on, publish returns once the queue has the message on a quorum of nodes.
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue_name,
                mandatory=True,
            )

    leader = await asyncio.to_thread(queue_leader, queue_name)
    survivor = next(n for n in NODES if n != leader)
    killed = False
    try:
        await asyncio.to_thread(kill_node, leader)
        killed = True
        assert leader not in await asyncio.to_thread(running_nodes)

        got = await _drain(cluster_urls[survivor - 1], queue_name, MESSAGES)
        assert sorted(got) == sorted(bodies), f"{MESSAGES - len(got)} confirmed messages lost"
        assert await asyncio.to_thread(queue_leader, queue_name) != leader  # a survivor leads it now

        await asyncio.to_thread(restart_node, leader)
        killed = False
        assert await asyncio.to_thread(running_nodes) == [1, 2, 3]
    finally:
        if killed:  # leave the cluster whole for the next test
            await asyncio.to_thread(restart_node, leader)
