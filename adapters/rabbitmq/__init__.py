"""RabbitMQ: the queues and exchanges of a province's axis, and a publisher that only says "done"
once the broker has confirmed the message. aio-pika stays inside this package."""

from adapters.rabbitmq.declare import declare_topology
from adapters.rabbitmq.names import RETRY_DELAYS_MS, BrokerNames
from adapters.rabbitmq.publisher import Publisher, open_channel

__all__ = ["RETRY_DELAYS_MS", "BrokerNames", "Publisher", "declare_topology", "open_channel"]
