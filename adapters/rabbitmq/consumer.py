"""What every consumer of the bus's queues shares: the inbox worker, the dead-letter worker, the relay.

* **Consuming** (:meth:`QueueConsumer._subscribe`): a queue declared beforehand by ``declare_topology``
  is declared again, passively, rather than looked up: a robust channel re-creates only the queues
  declared through it, and with them their consumers, after the broker comes back.
* **Stopping** (:meth:`QueueConsumer.stop`): no new messages, what was taken is finished (for up to
  ``drain_s``), and anything left unacknowledged goes back to its queue when the channel closes.
* **Settling** a message (:func:`decide`, then :meth:`QueueConsumer.settle`): acknowledged only after
  its durable step (written to the store, or a copy confirmed in a retry queue or the dead-letter
  queue); a poison message or a refusal goes to the dead-letter queue with its reason, never back to
  its queue; a temporary failure to a retry queue, until the back-off tiers are used up; and when not
  even the copy could be made, back to its queue after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from adapters.rabbitmq.headers import HeaderValue
from adapters.rabbitmq.parser import BusMessage, known_fields, parse_message, passed_on
from bus.errors import AxisRejectedError, BusError, InputError, PoisonMessageError

__all__ = [
    "ACK",
    "REQUEUE",
    "Action",
    "CopyPublisherPort",
    "Decision",
    "QueueConsumer",
    "cancel_task",
    "decide",
]

log = structlog.get_logger("bus.consumer")

T = TypeVar("T")
Callback = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Action(enum.Enum):
    ACK = "ack"  # the durable step is done: the message leaves its queue
    RETRY = "retry"  # a temporary failure: a copy waits in a retry queue, then the message is acked
    DEAD_LETTER = "dead-letter"  # poison or refused: a copy with the reason is kept, then acked
    REQUEUE = "requeue"  # nothing durable happened: back to its queue, after a pause


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""  # DEAD_LETTER: what the operator reads; RETRY: the temporary failure
    delay_ms: int = 0  # RETRY: the back-off tier the copy waits in
    attempt: int = 0  # RETRY: the attempts the copy carries (x-bus-attempt)


ACK = Decision(Action.ACK)
REQUEUE = Decision(Action.REQUEUE)

# The input is bad, or the national axis answered and refused it: trying again changes nothing.
_PERMANENT = (InputError, AxisRejectedError)


def decide(error: BusError | None, *, attempt: int = 1, delays: Sequence[int] = ()) -> Decision:
    """The fate of a message whose *attempt*-th handling ended with *error* (None: it succeeded),
    with *delays* the back-off tiers in milliseconds: by the error's type, never by its text."""
    if error is None:
        return ACK
    if isinstance(error, PoisonMessageError):
        return Decision(Action.DEAD_LETTER, str(error))
    if isinstance(error, _PERMANENT):
        return Decision(Action.DEAD_LETTER, f"{error} (attempt {attempt})")
    if attempt > len(delays):
        return Decision(Action.DEAD_LETTER, f"gave up after {attempt} attempts: {error}")
    return Decision(Action.RETRY, str(error), delay_ms=delays[attempt - 1], attempt=attempt)


class CopyPublisherPort(Protocol):
    """The copies a consumer publishes: :class:`~adapters.rabbitmq.publisher.Publisher` in production."""

    async def retry(
        self,
        target_queue: str,
        delay_ms: int,
        body: bytes,
        *,
        message_id: str,
        attempt: int,
        headers: Mapping[str, HeaderValue] = ...,
        wait_ms: int | None = None,
    ) -> None: ...

    async def dead_letter(
        self,
        body: bytes,
        *,
        message_id: str,
        reason: str,
        source_queue: str,
        headers: Mapping[str, HeaderValue] = ...,
    ) -> None: ...


@dataclass(slots=True)
class _Subscription:
    queue: AbstractQueue
    callback: Callback
    tag: str | None = field(default=None)


class QueueConsumer(Generic[T]):
    """Consumes queues of one channel; *name* starts its log events (``inbox``, ``relay_out``, ...).

    A subclass that writes in a task of its own (:meth:`_start_writer`) puts what it takes in
    ``_pending`` and calls ``task_done`` for each: :meth:`stop` waits for them."""

    def __init__(
        self, channel: AbstractChannel, publisher: CopyPublisherPort | None, *, name: str, pause_s: float
    ) -> None:
        self._channel = channel
        self._copies = publisher
        self._name = name
        self._pause_s = pause_s
        self._subscriptions: list[_Subscription] = []
        self._pending: asyncio.Queue[T] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.dead_lettered = 0  # messages this process put in the dead-letter queue (metrics)

    async def _subscribe(self, queue_name: str, callback: Callback) -> None:
        queue = await self._channel.declare_queue(queue_name, passive=True)
        subscription = _Subscription(queue, callback)
        self._subscriptions.append(subscription)
        subscription.tag = await queue.consume(callback)

    async def _resume(self) -> None:
        """Consume again what :meth:`_pause` stopped consuming."""
        for subscription in self._subscriptions:
            if subscription.tag is None:
                subscription.tag = await subscription.queue.consume(subscription.callback)

    async def _pause(self) -> None:
        """Take no new messages; those in hand are still settled."""
        for subscription in self._subscriptions:
            if subscription.tag is not None:
                tag, subscription.tag = subscription.tag, None
                # A channel that is gone has no consumer to cancel: its messages return by themselves.
                with contextlib.suppress(Exception):
                    await subscription.queue.cancel(tag)

    @property
    def consuming(self) -> bool:
        return any(subscription.tag is not None for subscription in self._subscriptions)

    def _start_writer(self, work: Coroutine[Any, Any, None]) -> None:
        self._writer = asyncio.create_task(work)

    async def stop(self, *, drain_s: float = 5.0) -> None:
        """Stop taking messages and finish what was taken (for up to *drain_s*); anything left
        unacknowledged goes back to its queue when the channel closes."""
        await self._pause()
        self._subscriptions.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), drain_s)
        await cancel_task(self._writer)
        self._writer = None

    async def parse(self, message: AbstractIncomingMessage, queue: str) -> BusMessage | None:
        """*message* parsed; None when it is poison, which is then settled: in the dead-letter queue
        with the reason (or back in its queue when even that failed)."""
        try:
            return parse_message(message)
        except PoisonMessageError as exc:
            raw = message.headers or {}
            log.warning(
                f"{self._name}.poison",
                queue=queue,
                reason=str(exc),
                message_id=message.message_id,
                **known_fields(raw),
            )
            await self.settle(message, decide(exc), queue=queue, headers=passed_on(raw))
            return None

    async def settle(
        self,
        message: AbstractIncomingMessage,
        decision: Decision,
        *,
        queue: str,
        headers: Mapping[str, HeaderValue] = {},
        wait_ms: int | None = None,
    ) -> bool:
        """Carry out *decision* for *message* of *queue* (a copy gets *headers*; a retry waits *wait_ms*
        when given, within its tier). True once the message is acknowledged, after its copy if any."""
        if decision.action in (Action.RETRY, Action.DEAD_LETTER) and self._copies is None:
            raise TypeError(f"{self._name} has no publisher for a {decision.action.value} copy")
        try:
            await self._copy(message, decision, queue, headers, wait_ms)
        except Exception as exc:  # nothing durable happened: keep the message, try it again later
            event = f"{self._name}.{decision.action.name.lower()}_failed"
            log.error(event, queue=queue, message_id=message.message_id, error=type(exc).__name__)
            decision = REQUEUE
        if decision.action is Action.REQUEUE:
            await asyncio.sleep(self._pause_s)
            await message.nack(requeue=True)
            return False
        await self._ack(message)
        if decision.action is Action.DEAD_LETTER:
            self.dead_lettered += 1
            log.error(
                f"{self._name}.dead_lettered",
                queue=queue,
                message_id=message.message_id,
                reason=decision.reason,
            )
        return True

    async def _copy(
        self,
        message: AbstractIncomingMessage,
        decision: Decision,
        queue: str,
        headers: Mapping[str, HeaderValue],
        wait_ms: int | None,
    ) -> None:
        if self._copies is None:
            return
        if decision.action is Action.RETRY:
            await self._copies.retry(
                queue,
                decision.delay_ms,
                message.body,
                message_id=message.message_id or "",
                attempt=decision.attempt,
                headers=headers,
                wait_ms=wait_ms,
            )
        elif decision.action is Action.DEAD_LETTER:
            await self._copies.dead_letter(
                message.body,
                message_id=message.message_id or "(none)",
                reason=decision.reason,
                source_queue=queue,
                headers=headers,
            )

    async def _ack(self, message: AbstractIncomingMessage, **fields: str) -> None:
        try:
            await message.ack()
        except Exception as exc:  # the channel died: the broker redelivers, and the store absorbs it
            log.warning(f"{self._name}.ack_failed", **fields, error=type(exc).__name__)


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel *task* and wait until it is done. Cancelled again each second while it runs: a
    cancellation absorbed somewhere below (a driver's clean-up, seen with SQLite during shutdown) must
    not leave shutdown waiting forever."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError):
        await task
