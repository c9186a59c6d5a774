"""A publish whose confirm was lost with the connection is published again once the channel is back,
within the publish timeout (issue 14: a node of the cluster dies under a publish); past the timeout it
is a BrokerError, never a silent success. A nack is published again once, on a reopened channel (a
RabbitMQ 3.10 channel that lived through a node's loss may nack every publish to a queue whose leader
moved); a second nack is the broker's answer."""

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
        await asyncio.sleep(0)  # the broker answers later: concurrent publishes are all under way
        if self.failures:
            self.failures -= 1
            raise self.error


class FakeChannel:
    def __init__(self, exchange: FlakyExchange) -> None:
        self.exchange = exchange
        self.waited_ready = 0
        self.closed = self.reopened = 0

    async def get_exchange(self, name: str, ensure: bool = False) -> FlakyExchange:
        return self.exchange

    async def ready(self) -> None:
        self.waited_ready += 1
        await asyncio.sleep(0)

    async def close(self) -> None:
        self.closed += 1

    async def reopen(self) -> None:
        self.reopened += 1


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


def _nack() -> DeliveryError:
    return DeliveryError(None, Basic.Nack(delivery_tag=1))


async def test_a_nack_is_published_again_once_on_a_reopened_channel() -> None:
    exchange = FlakyExchange(1, _nack())
    publisher, channel = _publisher(exchange, timeout=10)
    await publisher.deliver("000.00.21.H99", b"<edXML/>", message_id="b3")
    assert exchange.attempts == ["b3", "b3"]
    assert (channel.closed, channel.reopened) == (1, 1)


async def test_a_second_nack_is_the_brokers_answer() -> None:
    exchange = FlakyExchange(2, _nack())
    publisher, channel = _publisher(exchange, timeout=10)
    with pytest.raises(BrokerError, match="did not confirm message b4"):
        await publisher.deliver("000.00.21.H99", b"<edXML/>", message_id="b4")
    assert exchange.attempts == ["b4", "b4"]
    assert channel.reopened == 1


async def test_concurrent_nacks_reopen_the_channel_once() -> None:
    exchange = FlakyExchange(5, _nack())
    publisher, channel = _publisher(exchange, timeout=10)
    await asyncio.gather(*(publisher.deliver("k", b"<edXML/>", message_id=f"m{n}") for n in range(5)))
    assert channel.reopened == 1
    assert sorted(exchange.attempts) == sorted([f"m{n}" for n in range(5)] * 2)
