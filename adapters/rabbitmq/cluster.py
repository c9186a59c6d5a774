"""A connection to a RabbitMQ cluster: one node at a time, another when it is lost (issue 14).

aio-pika's robust connection reconnects, and restores its channels, the queues declared through them and
their consumers, but always to the one URL it was given: with that node dead, a gateway would wait for it
forever while two nodes of three, and the quorum queues on them, carry on. :class:`ClusterConnection` is
that robust connection over the list of ``[amqp] nodes``: each attempt after a loss, or after a failed
attempt, goes to the next node of the list, round and round, so a gateway is back on a surviving node
after one reconnect interval. What the connection restores it restores there: quorum queues are the
cluster's, not a node's, and a consumer may attach to any node.

Publishing through a lost connection is the publisher's business (adapters/rabbitmq/publisher.py): it
publishes again, once the channel is back, a message whose confirm it did not get; consumers of the bus
absorb the duplicate that may make.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aio_pika import RobustConnection
from yarl import URL

__all__ = ["ClusterConnection", "connect_cluster", "node_of"]

log = structlog.get_logger("bus.broker")


def node_of(url: URL | str) -> str:
    """``host:port`` of a node's URL: what logs and ``/readyz`` name (never the password)."""
    parsed = URL(str(url))
    return f"{parsed.host}:{parsed.port or 5672}"


class ClusterConnection(RobustConnection):
    """A robust connection that moves to the next of *nodes* on every loss and failed attempt."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        nodes: Sequence[str] = kwargs.pop("nodes", ())
        super().__init__(url, loop=loop, **kwargs)
        self.nodes = [URL(n) for n in nodes] or [self.url]
        self._at = next((i for i, n in enumerate(self.nodes) if node_of(n) == node_of(self.url)), 0)
        self.url = self.nodes[self._at]
        self.moves = 0  # how often this connection went to another node (tests, metrics)
        # The node this connection is established on (connected and restored), None between a loss and
        # the next success: a failed attempt (refused, or its restore failed) also ends in
        # _on_connection_close, and must move once, not twice (twice skipped a live node).
        self._on_node: str | None = None
        if "reconnect_interval" not in url.query:
            self.reconnect_interval = 2.0  # aio-pika's 5 s, per node tried, is long for a failover

    @property
    def node(self) -> str:
        """The node this connection is on, or tries next: ``host:port``."""
        return node_of(self.url)

    @property
    def place(self) -> str:
        """``node 2 of 3``: where :attr:`node` stands in ``[amqp] nodes`` (``/readyz``)."""
        return f"node {self._at + 1} of {len(self.nodes)}"

    def _next_node(self, why: str) -> None:
        if len(self.nodes) < 2:
            return
        before = self.node
        self._at = (self._at + 1) % len(self.nodes)
        # Keep what the URL of the first node carried beyond its address (a refreshed secret).
        self.url = self.nodes[self._at].with_user(self.url.user).with_password(self.url.password)
        self.moves += 1
        log.warning("broker.next_node", lost=before, next=self.node, reason=why)

    async def _on_connected(self) -> None:
        await super()._on_connected()  # restores channels, queues and consumers; may fail, then
        self._on_node = self.node  # the attempt failed (and moves on once, below), not the node

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        lost, self._on_node = self._on_node, None
        if lost == self.node and not (self._close_called or self.is_closed):
            self._next_node("connection lost")
        await super()._on_connection_close(closing)

    # The robust connection's one attempt (a name-mangled method: RobustConnection's own loop calls it).
    async def _RobustConnection__connect_transport(self) -> None:
        try:
            await super()._RobustConnection__connect_transport()  # type: ignore[misc]
        except Exception:
            self._next_node("connection attempt failed")
            raise


async def connect_cluster(nodes: Sequence[str], *, timeout_s: float = 15.0) -> ClusterConnection:
    """A :class:`ClusterConnection` on the first of *nodes* that answers (each tried for *timeout_s*).
    Raises the last node's error when none does."""
    error: BaseException = ValueError("no RabbitMQ node to connect to")
    for index, first in enumerate(nodes):
        ordered = [*nodes[index:], *nodes[:index]]
        connection = ClusterConnection(URL(first), nodes=ordered)
        try:
            await connection.connect(timeout=timeout_s)
        except Exception as exc:
            error = exc
            await connection.close()
            log.warning("broker.node_unavailable", node=node_of(first), error=repr(exc)[:300])
            continue
        log.info("broker.connected", node=connection.node, nodes=len(nodes))
        return connection
    raise error
