"""A publish whose confirm was lost with the connection is published again once the channel is back,
within the publish timeout (issue 14: a node of the cluster dies under a publish); past the timeout it
is a BrokerError, never a silent success. A nack is not retried: the broker answered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError, ConnectionClosed, DeliveryError
from pamqp.commands import Basic

from adapters.rabbitmq import BrokerNames, Publisher
from bus.errors import BrokerError

pytestmark = pytest.mark.asyncio


class FlakyExchange:
    """Fails its first *failures* publishes with *error*, then takes every message."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures, self.error = failures, error
        self.attempts: list[str | None] = []

    async def publish(self, message: Any, *, routing_key: str, mandatory: bool, **_: Any) -> None:
        self.attempts.append(message.message_id)
        if self.failures:
            self.failures -= 1
            raise self.error


class FakeChannel:
    def __init__(self, exchange: FlakyExchange) -> None:
        self.exchange = exchange
        self.waited_ready = 0

    async def get_exchange(self, name: str, ensure: bool = False) -> FlakyExchange:
        return self.exchange

    async def ready(self) -> None:
        self.waited_ready += 1
        await asyncio.sleep(0)


def _publisher(exchange: FlakyExchange, timeout: float) -> tuple[Publisher, FakeChannel]:
    channel = FakeChannel(exchange)
    return Publisher(channel, BrokerNames("t"), timeout=timeout), channel  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "lost", [ChannelInvalidStateError("channel closed"), ConnectionClosed(320, "CONNECTION_FORCED")]
)
async def test_a_publish_lost_with_the_connection_is_published_again(lost: BaseException) -> None:
    exchange = FlakyExchange(2, lost)
    publisher, channel = _publisher(exchange, timeout=10)
    await publisher.deliver("000.00.21.H99", b"<edXML/>", message_id="b1|000.00.21.H99")
    assert exchange.attempts == ["b1|000.00.21.H99"] * 3  # same message id: a duplicate is absorbed
    assert channel.waited_ready == 2


async def test_past_the_publish_timeout_it_is_a_broker_error() -> None:
    exchange = FlakyExchange(1000, ChannelInvalidStateError("channel closed"))
    publisher, _ = _publisher(exchange, timeout=0.5)
    with pytest.raises(BrokerError, match="did not confirm message b2"):
        await publisher.deliver("000.00.21.H99", b"<edXML/>", message_id="b2")
    assert 1 < len(exchange.attempts) < 10


async def test_a_nack_is_not_published_again() -> None:
    exchange = FlakyExchange(1, DeliveryError(None, Basic.Nack(delivery_tag=1)))
    publisher, _ = _publisher(exchange, timeout=10)
    with pytest.raises(BrokerError):
        await publisher.deliver("000.00.21.H99", b"<edXML/>", message_id="b3")
    assert exchange.attempts == ["b3"]
