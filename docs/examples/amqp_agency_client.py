"""An agency's document system on a province's exchange axis over AMQP: send, receive, acknowledge.

A complete client for docs/amqp-agencies.md, with nothing but aio-pika (``pip install aio-pika``) and
the standard library. It connects as the agency's RabbitMQ user (made by the axis's ``bus amqp-users``):

    export BUS_AGENCY_AMQP_URL='amqp://bus.000.00.01.H99:PASSWORD@axis.example:5672/'
    python amqp_agency_client.py --agency 000.00.01.H99 send cong-van.signed.edxml
    python amqp_agency_client.py --agency 000.01.21.H99 receive --into inbox/ --ack done

``send`` publishes the envelope to the agency intake with a direct reply-to address, waits for the
axis's answer and prints it (exit 0 accepted, 1 refused, 2 no answer). ``receive`` takes what the
agency's delivery queue holds, writes each envelope to ``DIR/<bus id>.edxml`` (once, however often it is
delivered), acknowledges it to the axis, and only then acknowledges the message to RabbitMQ; it stops
after ``--idle`` seconds without a message. The password is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
BUS_ID_HEADER = "x-bus-id"


class NoAnswer(Exception):
    """No answer from the axis in time: the envelope may or may not be accepted; send it again."""


class AgencyConnection:
    """One connection of an agency to the axis: ``send``, ``acknowledge``, ``receive``."""

    def __init__(self, url: str, agency: str, *, prefix: str = "bus", answer_timeout_s: float = 60.0) -> None:
        self.url = url
        self.agency = agency
        self.prefix = prefix
        self.answer_timeout_s = answer_timeout_s
        # The broker checks that user_id is the connection's user: it is how the axis knows the sender.
        self.user = unquote(urlsplit(url).username or "")
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> AgencyConnection:
        self._connection = await aio_pika.connect(
            self.url, client_properties={"connection_name": f"agency {self.agency}"}, timeout=15
        )
        # Publisher confirms: a publish returns once the broker holds the message.
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        # Direct reply-to: answers come back on this channel, to no queue of ours (no permission needed).
        replies = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_answer, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("use `async with AgencyConnection(...)`")
        return self._channel

    async def _on_answer(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.pop(message.correlation_id or "", None)
        if waiting is not None and not waiting.done():  # a second answer to the same request: ignored
            waiting.set_result(json.loads(message.body))

    async def _request(self, exchange: str, body: bytes, content_type: str) -> dict[str, Any]:
        """Publish *body* to *exchange* and wait for the axis's answer (:class:`NoAnswer` if none)."""
        correlation_id = uuid.uuid4().hex
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = answer
        message = aio_pika.Message(
            body,
            user_id=self.user,
            reply_to=DIRECT_REPLY_TO,
            correlation_id=correlation_id,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            target = await self.channel.get_exchange(exchange, ensure=False)
            await target.publish(message, routing_key="", mandatory=True, timeout=30)
            return await asyncio.wait_for(answer, self.answer_timeout_s)
        except TimeoutError:
            raise NoAnswer(f"no answer from the axis within {self.answer_timeout_s} s") from None
        finally:
            self._waiting.pop(correlation_id, None)

    async def send(self, envelope: bytes) -> dict[str, Any]:
        """Send one edXML envelope; the axis's answer: ``{"status": 202, "bus_id": ...}`` when accepted,
        else ``{"status": 4xx/5xx, "error": {"code": ..., "message": ...}}`` (the HTTP API's codes)."""
        return await self._request(f"{self.prefix}.agency-intake", envelope, "application/xml")

    async def send_until_answered(self, envelope: bytes, *, attempts: int = 5) -> dict[str, Any]:
        """:meth:`send`, again while there is no answer or the axis says 503 (not accepted). A 409
        ``duplicate`` after an unanswered attempt means that attempt was accepted: it is answered as
        accepted, with the bus id of the first acceptance."""
        unsure = False
        for attempt in range(attempts):
            try:
                answer = await self.send(envelope)
            except NoAnswer:
                unsure = True
                continue
            error = answer.get("error", {})
            if answer["status"] == 409 and error.get("code") == "duplicate" and unsure:
                return {"status": 202, "bus_id": error["bus_id"], "repeat": True}
            if answer["status"] < 500:
                return answer
            unsure = unsure or error.get("code") == "outcome-unknown"
            await asyncio.sleep(min(2**attempt, 30))
        raise NoAnswer(f"no definite answer after {attempts} attempts: send it again later")

    async def acknowledge(self, bus_id: str, state: str, reason: str | None = None) -> dict[str, Any]:
        """Acknowledge an envelope received: ``processing``, ``done`` or ``fail`` (with a reason)."""
        body = json.dumps({"bus_id": bus_id, "state": state, "reason": reason}).encode("utf-8")
        return await self._request(f"{self.prefix}.agency-acks", body, "application/json")

    async def receive(
        self,
        handle: Callable[[AbstractIncomingMessage], Awaitable[str | None]],
        *,
        idle_s: float = 5.0,
        prefetch: int = 32,
        concurrency: int = 8,
    ) -> int:
        """Consume the agency's delivery queue until it has been quiet for *idle_s*. *handle* keeps each
        envelope (durably, once: a message may come again after a failure) and returns the state to
        acknowledge it with, or None to acknowledge it later; the message is acknowledged to RabbitMQ
        after that. Up to *concurrency* envelopes are handled at once (each acknowledgement waits for
        the axis's answer: one at a time, a busy queue would wait on every round trip). Returns how many
        messages were handled."""
        if self._connection is None:
            raise RuntimeError("use `async with AgencyConnection(...)`")
        channel = await self._connection.channel()  # its own channel: its own prefetch
        await channel.set_qos(prefetch_count=max(prefetch, concurrency))
        queue = await channel.get_queue(f"{self.prefix}.agency.{self.agency}", ensure=False)
        handled = 0
        slots = asyncio.Semaphore(concurrency)
        working: set[asyncio.Task[None]] = set()

        async def one(message: AbstractIncomingMessage) -> None:
            nonlocal handled
            try:
                state = await handle(message)
                bus_id = header(message, BUS_ID_HEADER)
                if state is not None:
                    answer = await self.acknowledge(bus_id, state)
                    # 409 already-final: acknowledged before (this is a redelivery). Anything else
                    # is a bug of ours: keep the message, and stop.
                    if answer["status"] != 200 and answer.get("error", {}).get("code") != "already-final":
                        raise RuntimeError(f"the axis refused the acknowledgement of {bus_id}: {answer}")
                await message.ack()
                handled += 1
            finally:
                slots.release()

        try:
            async with queue.iterator() as messages:
                while True:
                    await slots.acquire()
                    for task in [t for t in working if t.done()]:
                        working.discard(task)
                        task.result()  # a failed envelope stops the loop, its message unacknowledged
                    try:
                        message = await asyncio.wait_for(messages.__anext__(), idle_s)
                    except (TimeoutError, StopAsyncIteration):
                        slots.release()
                        break
                    working.add(asyncio.create_task(one(message)))
                if working:  # the envelopes under way finish before the channel closes
                    await asyncio.gather(*working)
                return handled
        finally:
            for task in working:
                task.cancel()
            with contextlib.suppress(Exception):
                await channel.close()


def header(message: AbstractIncomingMessage, name: str) -> str:
    """One of the axis's ``x-bus-*`` headers of a delivery, as text."""
    value = (message.headers or {}).get(name, "")
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def keep_in(directory: Path, state: str | None) -> Callable[[AbstractIncomingMessage], Awaitable[str | None]]:
    """A handler for :meth:`AgencyConnection.receive`: each envelope written to ``DIRECTORY/<bus id>.edxml``
    (flushed to disk, then renamed into place: a file there is whole), once."""

    async def handle(message: AbstractIncomingMessage) -> str | None:
        bus_id = header(message, BUS_ID_HEADER)
        target = directory / f"{bus_id}.edxml"
        if not target.exists():  # a repeat of a message already kept is acknowledged again, not kept twice
            partial = target.with_suffix(".part")
            with partial.open("wb") as out:
                out.write(message.body)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(target)
            print(f"{target}: from {header(message, 'x-bus-sender')} ({header(message, 'x-bus-kind')})")
        return state

    return handle


async def _main(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("BUS_AGENCY_AMQP_URL")
    if not url:
        print(
            "error: give --url or set BUS_AGENCY_AMQP_URL (amqp://USER:PASSWORD@HOST:5672/)", file=sys.stderr
        )
        return 2
    async with AgencyConnection(url, args.agency, prefix=args.prefix, answer_timeout_s=args.timeout) as axis:
        if args.command == "send":
            try:
                answer = await axis.send_until_answered(args.envelope.read_bytes())
            except NoAnswer as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(json.dumps(answer, ensure_ascii=False, indent=2))
            return 0 if answer["status"] == 202 else 1
        if args.command == "ack":
            answer = await axis.acknowledge(args.bus_id, args.state, args.reason)
            print(json.dumps(answer, ensure_ascii=False, indent=2))
            return 0 if answer["status"] == 200 else 1
        args.into.mkdir(parents=True, exist_ok=True)
        count = await axis.receive(keep_in(args.into, args.ack), idle_s=args.idle)
        print(f"{count} message(s) received", file=sys.stderr)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="An agency's client of the exchange axis over AMQP.")
    parser.add_argument("--url", help="amqp://USER:PASSWORD@HOST:5672/ (default: $BUS_AGENCY_AMQP_URL)")
    parser.add_argument("--agency", required=True, help="your OrganId, e.g. 000.00.01.H99")
    parser.add_argument("--prefix", default="bus", help="the axis's amqp.prefix (default: bus)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="send a (signed) edXML envelope and print the answer")
    send.add_argument("envelope", type=Path)
    receive = commands.add_parser("receive", help="take what your delivery queue holds")
    receive.add_argument("--into", type=Path, required=True, help="directory for the envelopes")
    receive.add_argument("--ack", choices=("processing", "done"), help="acknowledge each with this state")
    receive.add_argument("--idle", type=float, default=5.0, help="stop after this many quiet seconds")
    ack = commands.add_parser("ack", help="acknowledge an envelope received earlier")
    ack.add_argument("bus_id")
    ack.add_argument("state", choices=("processing", "done", "fail"))
    ack.add_argument("--reason", help="why (required for fail)")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
