"""The national-axis relay of one province against the embedded mock axis, on the real RabbitMQ and
a real store: retries through RabbitMQ, dead letters with reasons, replays, the circuit breaker, and
an arrival the intake refuses (issue 4, items 2, 3 and 6)."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aio_pika
import pytest

from adapters.national_axis import CircuitState, NationalAxisClient
from adapters.rabbitmq import BrokerNames
from bus.delivery import DeliveryState, TimelineEvent
from bus.organ_id import OrganId
from bus.settings import Settings, load_settings
from entrypoints.runtime import Node
from mock_axis import MockAxisConfig, RunningMockAxis, load_mock_config, serve_mock_axis
from tests.factory import make_document
from tests.integration.conftest import delete_broker_objects, write_config

pytestmark = pytest.mark.asyncio
T = TypeVar("T")

AXIS_SECRET = "test-axis-secret-H99-0123456789"  # noqa: S105 - a test value
G12_SECRET = "test-axis-secret-G12-0123456789"  # noqa: S105 - a test value
SENDER = OrganId.parse("000.00.01.H99")
SYSTEMS = f"""
[[systems]]
system_id = "000.00.90.H99"
secret = "{AXIS_SECRET}"
serves = ["000.00.00.H99"]

[[systems]]
system_id = "000.00.00.G12"
name = "Bộ Tài chính"
secret = "{G12_SECRET}"
serves = ["000.00.00.G12"]
"""
G77 = """
[[systems]]
system_id = "000.00.00.G77"
secret = "test-axis-secret-G77-0123456789"
serves = ["000.00.00.G77"]
"""


def _mock_config(tmp_path: Path, text: str) -> MockAxisConfig:
    path = tmp_path / f"axis-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text, encoding="utf-8")
    return load_mock_config(path)


def _settings(tmp_path: Path, pki_dir: Path, axis_url: str, prefix: str, **axis: str) -> Settings:
    options = {
        "timeout_s": "3",
        "poll_interval_s": "60",  # one poll at start-up; tests that want arrivals set it lower
        "retry_delays_ms": "[300, 600]",
        "breaker_failures": "100",
        "breaker_open_s": "0.5",
        **axis,
    }
    section = "\n[national_axis]\n" + f'endpoint = "{axis_url}"\nsecret = "{AXIS_SECRET}"\n'
    section += "".join(f"{k} = {v}\n" for k, v in options.items())
    config = write_config(
        tmp_path / "province.toml",
        pki_dir,
        prefix=prefix,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}",
        extra=section,
    )
    return load_settings(config)


@asynccontextmanager
async def _node(settings: Settings) -> AsyncIterator[Node]:
    """A started node whose relay has finished its first poll of the axis (so that faults a test
    switches on afterwards meet the requests it means)."""
    node = await Node.start(settings)
    try:
        axis = node.axis
        assert axis is not None

        async def polled() -> bool | None:
            return True if axis.into.polls > 0 else None

        await _eventually(polled, within_s=10, what="the relay's first poll")
        yield node
    finally:
        await node.stop()


async def _eventually(probe: Callable[[], Awaitable[T | None]], *, within_s: float, what: str) -> T:
    deadline = time.monotonic() + within_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.1)


async def _state(node: Node, bus_id: str, recipient: str, state: DeliveryState) -> None:
    async def reached() -> bool | None:
        rows = await node.store.deliveries(bus_id)
        return True if any(r.recipient == recipient and r.state is state for r in rows) else None

    await _eventually(reached, within_s=15, what=f"{recipient} of {bus_id} in state {state}")


async def _send(node: Node, recipient: str, number: int) -> str:
    accepted = await node.intake.accept(make_document(str(SENDER), [recipient], number), sender=SENDER)
    return accepted.bus_id


def _bus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def _axis(tmp_path: Path, text: str = SYSTEMS, port: int = 0) -> AsyncIterator[RunningMockAxis]:
    async with serve_mock_axis(
        _mock_config(tmp_path, text), f"sqlite+aiosqlite:///{tmp_path / 'axis.db'}", port=port
    ) as running:
        yield running


async def test_temporary_failures_are_retried_through_rabbitmq(
    tmp_path: Path, pki_dir: Path, prefix: str
) -> None:
    async with _axis(tmp_path) as axis:
        settings = _settings(tmp_path, pki_dir, axis.url, prefix)
        try:
            async with _node(settings) as node:
                axis.faults.fail_next = 2  # the next two requests answer 500
                bus_id = await _send(node, "000.00.00.G12", 1)
                await _state(node, bus_id, "000.00.00.G12", DeliveryState.SENT_TO_AXIS)
                states = [
                    e.state for e in await node.store.timeline(bus_id) if e.recipient == "000.00.00.G12"
                ]
                assert states.count(DeliveryState.RETRYING) == 2
                assert states[-1] is DeliveryState.SENT_TO_AXIS
                ministry = NationalAxisClient(axis.url, "000.00.00.G12", G12_SECRET)
                [item] = await ministry.received()
                body = await ministry.get_edoc(item.doc_id)
                await ministry.close()
                assert item.sender == "000.00.01.H99"
                assert b"000.00.90.H99" in body  # this axis's trace header travelled with it
        finally:
            await delete_broker_objects(settings)


async def test_refusal_is_dead_lettered_and_an_operator_replays_it(
    tmp_path: Path, pki_dir: Path, prefix: str
) -> None:
    settings: Settings | None = None
    try:
        async with _axis(tmp_path) as axis:
            port = axis.port
            settings = _settings(tmp_path, pki_dir, axis.url, prefix)
            async with _node(settings) as node:
                bus_id = await _send(node, "000.00.00.G77", 2)  # the axis knows no G77
                await _state(node, bus_id, "000.00.00.G77", DeliveryState.DEAD_LETTERED)
                [dead] = await node.store.dead_letters()
                assert dead.bus_id == bus_id
                assert "ErrorCode" in dead.reason
                events = [e for e in await node.store.timeline(bus_id) if e.recipient == "000.00.00.G77"]
                assert [e.state for e in events][-2:] == [DeliveryState.FAILED, DeliveryState.DEAD_LETTERED]
        listed = _bus("deadletters", "--config", str(tmp_path / "province.toml"))
        assert listed.returncode == 0, listed.stderr
        assert "000.00.00.G77" in listed.stdout
        # The ministry joins the axis; the operator replays the dead letter.
        async with _axis(tmp_path, SYSTEMS + G77, port=port), _node(settings) as node:
            replayed = _bus("replay", "--config", str(tmp_path / "province.toml"), str(dead.id))
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
            await _state(node, bus_id, "000.00.00.G77", DeliveryState.SENT_TO_AXIS)
            states = [e.state for e in await node.store.timeline(bus_id) if e.recipient == "000.00.00.G77"]
            assert DeliveryState.REPLAYED in states
            assert states[-1] is DeliveryState.SENT_TO_AXIS
            assert await node.store.dead_letters() == []  # replayed ones are listed only with --all
    finally:
        if settings is not None:
            await delete_broker_objects(settings)


async def test_too_many_attempts_dead_letter_with_the_reason(
    tmp_path: Path, pki_dir: Path, prefix: str
) -> None:
    async with _axis(tmp_path) as axis:
        settings = _settings(tmp_path, pki_dir, axis.url, prefix)
        try:
            async with _node(settings) as node:
                axis.faults.down = True
                bus_id = await _send(node, "000.00.00.G12", 3)
                await _state(node, bus_id, "000.00.00.G12", DeliveryState.DEAD_LETTERED)
                [dead] = await node.store.dead_letters()
                assert "gave up after 3 attempts" in dead.reason
                states = [
                    e.state for e in await node.store.timeline(bus_id) if e.recipient == "000.00.00.G12"
                ]
                assert states.count(DeliveryState.RETRYING) == 2  # two back-off tiers, then the end
        finally:
            await delete_broker_objects(settings)


async def test_circuit_breaker_stops_hammering_and_drains_after(
    tmp_path: Path, pki_dir: Path, prefix: str
) -> None:
    async with _axis(tmp_path) as axis:
        settings = _settings(
            tmp_path,
            pki_dir,
            axis.url,
            prefix,
            breaker_failures="2",
            retry_delays_ms="[300, 600, 1200, 2400]",
        )
        try:
            async with _node(settings) as node:
                assert node.axis is not None
                axis.faults.down = True
                bus_ids = [await _send(node, "000.00.00.G12", 10 + n) for n in range(12)]

                async def opened() -> bool | None:
                    return True if node.axis is not None and node.axis.breaker.is_open else None

                await _eventually(opened, within_s=10, what="the circuit to open")
                attempts = node.axis.out.attempts
                assert "503" in (node.axis.breaker.last_error or "")  # what the axis page shows
                await asyncio.sleep(2.5)  # probes go on; sends do not
                assert node.axis.out.attempts == attempts
                assert attempts < len(bus_ids)
                connection = await aio_pika.connect(settings.amqp.url)
                queue = await (await connection.channel()).declare_queue(
                    BrokerNames(prefix).outbound_queue, passive=True
                )
                assert (queue.declaration_result.message_count or 0) > 0  # the backlog waits in RabbitMQ
                assert queue.declaration_result.consumer_count == 0  # paused, not bouncing messages
                await connection.close()
                axis.faults.down = False
                for bus_id in bus_ids:
                    await _state(node, bus_id, "000.00.00.G12", DeliveryState.SENT_TO_AXIS)
                assert node.axis.breaker.state is CircuitState.CLOSED
                ministry = NationalAxisClient(axis.url, "000.00.00.G12", G12_SECRET)
                assert len(await ministry.received()) == len(bus_ids)
                await ministry.close()
        finally:
            await delete_broker_objects(settings)


async def test_refused_arrival_is_kept_failed_at_the_axis_and_replayable(
    tmp_path: Path, pki_dir: Path, prefix: str
) -> None:
    async with _axis(tmp_path) as axis:
        # No CA is trusted for other provinces and ministries: an arrival cannot be verified.
        strict = _settings(tmp_path, pki_dir, axis.url, prefix, poll_interval_s="0.3")
        try:
            ministry = NationalAxisClient(axis.url, "000.00.00.G12", G12_SECRET)
            envelope = make_document("000.00.00.G12", ["000.00.01.H99"], 20, notation="BTC-NSNN")
            doc_id = await ministry.send_edoc(envelope, sender="000.00.00.G12")
            await ministry.close()
            async with _node(strict) as node:

                async def refused() -> list[object] | None:
                    return list(await node.store.dead_letters()) or None

                [dead] = await _eventually(refused, within_s=10, what="the arrival in the dead letters")
                assert dead.source_queue == BrokerNames(prefix).axis_inbound_queue
                assert "signed" in dead.reason
                item = await axis.store.item_for("000.00.90.H99", doc_id)
                assert item is not None
                assert item.status == "fail"  # the axis was told
                assert await node.store.inbox("000.00.01.H99") == []
                await asyncio.sleep(1.0)  # three more polls: the axis still lists it as failed
                assert len(await node.store.dead_letters()) == 1  # not refused again and again
            # The operator decides this ministry's unsigned envelopes are acceptable, and replays.
            relaxed = _settings(
                tmp_path, pki_dir, axis.url, prefix, poll_interval_s="0.3", require_signature="false"
            )
            async with _node(relaxed) as node:
                replayed = _bus("replay", "--config", str(tmp_path / "province.toml"), str(dead.id))
                assert replayed.returncode == 0, replayed.stdout + replayed.stderr

                async def delivered() -> list[object] | None:
                    return list(await node.store.inbox("000.00.01.H99")) or None

                [received] = await _eventually(delivered, within_s=10, what="the replayed arrival")
                assert received.sender == "000.00.00.G12"
                item = await axis.store.item_for("000.00.90.H99", doc_id)
                assert item is not None
                assert item.status == "done"
        finally:
            await delete_broker_objects(strict)


async def test_an_axis_that_loses_an_accepted_envelope_gets_it_again(
    tmp_path: Path, pki_dir: Path, prefix: str
) -> None:
    async with _axis(tmp_path) as axis:
        settings = _settings(
            tmp_path, pki_dir, axis.url, prefix, reconcile_after_s="0.5", reconcile_interval_s="0.3"
        )
        try:
            async with _node(settings) as node:
                axis.faults.accept_then_lose = 1  # answers OK with a DocId, keeps nothing
                bus_id = await _send(node, "000.00.00.G12", 30)
                ministry = NationalAxisClient(axis.url, "000.00.00.G12", G12_SECRET)

                async def arrived() -> list[object] | None:
                    return list(await ministry.received()) or None

                items = await _eventually(arrived, within_s=15, what="the envelope sent again")
                await ministry.close()
                assert len(items) == 1

                async def both_sends() -> list[TimelineEvent] | None:
                    events = [e for e in await node.store.timeline(bus_id) if e.recipient == "000.00.00.G12"]
                    sent = [e for e in events if e.state is DeliveryState.SENT_TO_AXIS]
                    return events if len(sent) == 2 else None  # the lost one and the one that arrived

                events = await _eventually(both_sends, within_s=10, what="the second sent-to-axis event")
                assert any(
                    e.state is DeliveryState.RETRYING and "gửi lại" in (e.detail or "") for e in events
                )

                async def settled() -> bool | None:
                    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                    return True if await node.store.unconfirmed_axis_sends(later) == [] else None

                await _eventually(settled, within_s=10, what="the second send confirmed by the axis")
                assert node.axis is not None
                assert node.axis.reconciler.resent == 1
        finally:
            await delete_broker_objects(settings)
