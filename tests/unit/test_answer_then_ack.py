"""The order of an AMQP agency's reply and the acknowledgement of its message: a message delivered again
is acknowledged before its reply, whose first attempt may be what closed the connection (RabbitMQ 3.10's
541 on a reply to a dead node's direct reply-to), so that it cannot come back forever."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.rabbitmq.agency_replies import answer_then_ack

pytestmark = pytest.mark.asyncio


class Steps:
    def __init__(self) -> None:
        self.done: list[str] = []

    async def reply(self, to: str | None, correlation_id: str | None, answer: Mapping[str, Any]) -> bool:
        self.done.append(f"reply {to} {correlation_id} {answer['status']}")
        return True

    async def ack(self, message: Any, **fields: str) -> None:
        self.done.append(f"ack {fields['correlation_id']}")


@pytest.mark.parametrize(
    ("redelivered", "order"),
    [
        (False, ["reply amq.rabbitmq.reply-to.x c-1 202", "ack c-1"]),  # first time: answered, then acked
        (True, ["ack c-1", "reply amq.rabbitmq.reply-to.x c-1 202"]),  # again: acked first
    ],
)
async def test_a_message_delivered_again_is_acknowledged_before_its_reply(
    redelivered: bool, order: list[str]
) -> None:
    steps = Steps()
    message = SimpleNamespace(
        redelivered=redelivered, reply_to="amq.rabbitmq.reply-to.x", correlation_id="c-1"
    )
    await answer_then_ack(steps, message, {"status": 202}, steps.ack)  # type: ignore[arg-type]
    assert steps.done == order
