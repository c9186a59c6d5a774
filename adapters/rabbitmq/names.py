"""Names of the broker objects of one axis, all under one prefix (tests use a fresh prefix each)."""

from __future__ import annotations

from dataclasses import dataclass

from bus.organ_id import OrganId

__all__ = ["RETRY_DELAYS_MS", "BrokerNames"]

# Back-off tiers for temporary failures: 5 s, 30 s, 5 min; after the last, the message is dead-lettered.
RETRY_DELAYS_MS: tuple[int, ...] = (5_000, 30_000, 300_000)


@dataclass(frozen=True, slots=True)
class BrokerNames:
    prefix: str = "bus"

    @property
    def deliver_exchange(self) -> str:
        """Direct exchange; routing keys from :mod:`bus.routing`."""
        return f"{self.prefix}.deliver"

    @property
    def outbound_queue(self) -> str:
        """Everything addressed outside the province, kept until the national-axis relay takes it."""
        return f"{self.prefix}.outbound"

    @property
    def axis_inbound_queue(self) -> str:
        """Envelopes from the national axis that an operator replays through the intake again (the
        relay-in takes new arrivals straight from the axis; this queue is for second chances)."""
        return f"{self.prefix}.axis-inbound"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.deadletter"

    def inbox(self, organ: OrganId) -> str:
        return f"{self.prefix}.inbox.{organ}"

    # -- AMQP agencies (docs/amqp-agencies.md) ------------------------------------------------------

    @property
    def agency_intake(self) -> str:
        """Fanout exchange the AMQP agencies publish envelopes to, and the quorum queue behind it that
        the bus's agency intake consumes (one name for both)."""
        return f"{self.prefix}.agency-intake"

    @property
    def agency_acks(self) -> str:
        """Fanout exchange the AMQP agencies publish acknowledgements to, and its queue (one name)."""
        return f"{self.prefix}.agency-acks"

    def agency_queue(self, organ: OrganId) -> str:
        """An AMQP agency's delivery queue: the only queue its broker user may read."""
        return f"{self.prefix}.agency.{organ}"

    def agency_user(self, organ: OrganId) -> str:
        """An AMQP agency's RabbitMQ user name (users are the broker's, not a vhost's: the prefix keeps
        two axes on one broker apart); the ``user_id`` of what it publishes."""
        return f"{self.prefix}.{organ}"

    def retry_queue(self, target: str, delay_ms: int) -> str:
        """Holds a message *delay_ms*, then dead-letters it back to *target* (back-off without a timer)."""
        return f"{target}.retry.{delay_ms}ms"
