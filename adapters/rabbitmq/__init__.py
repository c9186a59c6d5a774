"""RabbitMQ: the queues and exchanges of a province's axis, a publisher that only says "done" once the
broker has confirmed the message, and what every consumer of the bus's queues shares (the parser of an
incoming message, the consumer base and its ack/retry/dead-letter decision), and what AMQP agencies talk
to (their intake, acknowledgements, delivery queues and broker users: docs/amqp-agencies.md). aio-pika
stays inside this package; other adapters use the names exported here."""

from adapters.rabbitmq.agency_acks import AgencyAcks
from adapters.rabbitmq.agency_deliveries import AgencyDeliveries
from adapters.rabbitmq.agency_intake import AgencyIntake
from adapters.rabbitmq.agency_replies import Refusal, Replies, agencies_by_user
from adapters.rabbitmq.agency_users import (
    AgencyUser,
    ManagementApi,
    Permissions,
    agency_permissions,
    sync_agency_user,
)
from adapters.rabbitmq.cluster import ClusterConnection, connect_cluster, node_of
from adapters.rabbitmq.consumer import (
    ACK,
    REQUEUE,
    Action,
    CopyPublisherPort,
    Decision,
    QueueConsumer,
    cancel_task,
    decide,
)
from adapters.rabbitmq.deadletters import DeadLetterWorker
from adapters.rabbitmq.declare import declare_agency_topology, declare_topology
from adapters.rabbitmq.headers import AXIS_DOC_HEADER, REPLAY_HEADER, RESEND_HEADER, HeaderValue, text_header
from adapters.rabbitmq.holding import until_written
from adapters.rabbitmq.inbox import InboxWorker
from adapters.rabbitmq.names import RETRY_DELAYS_MS, BrokerNames
from adapters.rabbitmq.parser import BusMessage, known_fields
from adapters.rabbitmq.publisher import Publisher, open_channel

__all__ = [
    "ACK",
    "AXIS_DOC_HEADER",
    "REPLAY_HEADER",
    "REQUEUE",
    "RESEND_HEADER",
    "RETRY_DELAYS_MS",
    "Action",
    "AgencyAcks",
    "AgencyDeliveries",
    "AgencyIntake",
    "AgencyUser",
    "BrokerNames",
    "BusMessage",
    "ClusterConnection",
    "CopyPublisherPort",
    "DeadLetterWorker",
    "Decision",
    "HeaderValue",
    "InboxWorker",
    "ManagementApi",
    "Permissions",
    "Publisher",
    "QueueConsumer",
    "Refusal",
    "Replies",
    "agencies_by_user",
    "agency_permissions",
    "cancel_task",
    "connect_cluster",
    "decide",
    "declare_agency_topology",
    "declare_topology",
    "known_fields",
    "node_of",
    "open_channel",
    "sync_agency_user",
    "text_header",
    "until_written",
]
