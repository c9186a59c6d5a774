"""Metrics, readiness and envelope log lines of a whole node on the real services (issue 5, items 3 to 5):
RabbitMQ, SQLite and PostgreSQL, the mock national axis; HTTP driven in-process through ASGI."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import structlog
from prometheus_client.parser import text_string_to_metric_families

from adapters.http import ApiContext, create_app
from adapters.http.client import AgencyClient, ApiFailure
from adapters.store import StatusStore
from bus.delivery import DeliveryState
from bus.settings import Settings
from entrypoints.runtime import Node
from tests.factory import make_document, make_status
from tests.integration.conftest import delete_broker_objects
from tests.integration.test_api import COMMUNE, DISTRICT, HOME_AFFAIRS, wait_for_inbox
from tests.integration.test_relay import _axis, _eventually, _node, _send, _settings, _state

pytestmark = pytest.mark.asyncio
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest_asyncio.fixture
async def node(node_settings: Settings) -> AsyncIterator[Node]:
    node = await Node.start(node_settings)
    yield node
    await node.stop()


def _client(ctx: ApiContext, agency: str, secret: bytes | None = None) -> AgencyClient:
    transport = httpx.ASGITransport(app=create_app(ctx))
    return AgencyClient("http://bus", agency, secret or f"demo-only-{agency}".encode(), transport=transport)


async def _get(ctx: ApiContext, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://bus") as http:
        return await http.get(path)


async def scrape(ctx: ApiContext) -> Samples:
    """Every sample of ``/metrics``, parsed by the Prometheus project's own parser."""
    response = await _get(ctx, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _id(item: dict[str, object]) -> int:
    return int(str(item["id"]))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_metrics_count_what_the_node_did(node: Node) -> None:
    ctx = node.api
    home, district = _client(ctx, HOME_AFFAIRS), _client(ctx, DISTRICT)
    ctx.metrics.store_max_age_s = 0  # every scrape reads the store (the cache is tested at the end)
    before = await scrape(ctx)
    assert value(before, "bus_envelopes_accepted_total", kind="document") == 0
    accepted = [
        await home.send(make_document(HOME_AFFAIRS, [DISTRICT, COMMUNE], 1)),
        await home.send(make_document(HOME_AFFAIRS, [DISTRICT], 2)),
        await home.send(make_document(HOME_AFFAIRS, [DISTRICT], 3)),
    ]
    refusals = [
        (home, make_document(HOME_AFFAIRS, [DISTRICT], 3), "duplicate"),
        (home, make_document(DISTRICT, [COMMUNE], 4), "forged-sender"),
        (_client(ctx, HOME_AFFAIRS, b"not-the-agency-secret"), make_document(HOME_AFFAIRS, [COMMUNE], 5), ""),
    ]
    for client, envelope, code in refusals:
        with pytest.raises(ApiFailure) as caught:
            await client.send(envelope)
        assert caught.value.code == (code or "bad-signature")
    [first, *_] = await wait_for_inbox(district, 3)
    await district.fetch(_id(first))
    await district.fetch(_id(first))  # fetched again: the inbox wait ended with the first
    await district.acknowledge(_id(first), "done")
    status = make_status(DISTRICT, HOME_AFFAIRS, accepted[0]["document_id"], "03")
    accepted.append(await district.send(status))
    await wait_for_inbox(home, 1)

    samples = await scrape(ctx)
    assert value(samples, "bus_envelopes_accepted_total", kind="document") == 3
    assert value(samples, "bus_envelopes_accepted_total", kind="status") == 1
    assert value(samples, "bus_intake_seconds_count") == 4
    assert value(samples, "bus_envelopes_rejected_total", reason="duplicate") == 1
    assert value(samples, "bus_envelopes_rejected_total", reason="forged-sender") == 1
    assert value(samples, "bus_envelopes_rejected_total", reason="bad-signature") == 1
    assert value(samples, "bus_envelopes_rejected_total", reason="invalid-envelope") == 0
    assert value(samples, "bus_inbox_wait_seconds_count") == 1
    assert value(samples, "bus_store_up") == 1
    # The gauges read from the store agree with the store.
    counts = await node.store.inbox_counts()
    assert counts == {DISTRICT: 2, COMMUNE: 1, HOME_AFFAIRS: 1}
    for agency in node.settings.topology.agencies:
        code = str(agency.organ_id)
        assert value(samples, "bus_inbox_depth", agency=code) == counts.get(code, 0)
        age = value(samples, "bus_inbox_oldest_pending_seconds", agency=code)
        assert (0 < age < 60) if code in counts else age == 0
    states = Counter([r.state.value for a in accepted for r in await node.store.deliveries(a["bus_id"])])
    assert sum(states.values()) == 5
    assert states[DeliveryState.DONE.value] == 1
    for state in DeliveryState:
        assert value(samples, "bus_deliveries", state=state.value) == states.get(state.value, 0)
    assert not any(name.startswith(("bus_relay", "bus_axis")) for name, _ in samples)  # no axis here

    # Read from the store at most every store_max_age_s, however often Prometheus comes.
    ctx.metrics.store_max_age_s = 60.0
    await district.acknowledge(_id((await district.inbox())[0]), "done")
    assert value(await scrape(ctx), "bus_inbox_depth", agency=DISTRICT) == 2
    ctx.metrics.store_max_age_s = 0
    assert value(await scrape(ctx), "bus_inbox_depth", agency=DISTRICT) == 1


async def test_readyz_answers_for_the_broker_and_the_database(
    node: Node, node_settings: Settings, tmp_path: Path
) -> None:
    ready = await _get(node.api, "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {
            "database": {"status": "ok"},
            # the node the gateway is on, and the queues its intake needs answering through it
            "broker": {"status": "ok", "detail": "on 127.0.0.1:5672"},
            "queues": {"status": "ok", "detail": "2 queues answer"},
        },
    }

    # The same node pointed at a database that does not answer: not ready, and /metrics says so too.
    unreachable = (
        "postgresql+asyncpg://bus@127.0.0.1:1/nowhere"
        if node_settings.database.url.startswith("postgresql")
        else f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'bus.db'}"
    )
    store = StatusStore.connect(unreachable)
    try:
        cut_off = dataclasses.replace(node.api, store=store)
        answer = await _get(cut_off, "/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["ready"] is False
        assert body["checks"]["database"]["status"] == "failed"
        assert body["checks"]["broker"]["status"] == "ok"
        cut_off.metrics.store_max_age_s = 0
        samples = await scrape(cut_off)
        assert value(samples, "bus_store_up") == 0
        assert not any(name == "bus_inbox_depth" for name, _ in samples)
    finally:
        await store.close()

    # A node whose broker connection is gone.
    other = await Node.start(node_settings, workers=False)
    try:
        await other.connection.close()
        answer = await _get(other.api, "/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["broker"]["status"] == "failed"
        assert answer.json()["checks"]["database"] == {"status": "ok"}
    finally:
        await other.stop()

    node.api.readiness.stopping = True  # SIGTERM: drained by the load balancer
    stopping = await _get(node.api, "/readyz")
    assert (stopping.status_code, stopping.json()["checks"]["node"]["status"]) == (503, "failed")


async def test_envelope_log_lines_carry_their_identifiers(node: Node) -> None:
    home, district = _client(node.api, HOME_AFFAIRS), _client(node.api, DISTRICT)
    with structlog.testing.capture_logs() as lines:
        sent = await home.send(make_document(HOME_AFFAIRS, [DISTRICT], 40))
        [item] = await wait_for_inbox(district, 1)
        await district.fetch(_id(item))
        await district.acknowledge(_id(item), "done")
        with pytest.raises(ApiFailure):
            await home.send(make_document(HOME_AFFAIRS, [DISTRICT], 40))
        with pytest.raises(ApiFailure):
            await _client(node.api, DISTRICT, b"a-wrong-secret-value").send(
                make_document(DISTRICT, [COMMUNE], 1)
            )
    by_event: dict[str, MutableMapping[str, Any]] = {line["event"]: line for line in lines}
    expected = {"bus_id": sent["bus_id"], "document_id": sent["document_id"], "sender": HOME_AFFAIRS}
    assert by_event["send.accepted"].items() >= {**expected, "recipients": [DISTRICT]}.items()
    for event in ("inbox.queued", "inbox.fetched", "inbox.acknowledged"):
        assert by_event[event].items() >= {**expected, "recipient": DISTRICT}.items(), event
    duplicate, unauthenticated = (line for line in lines if line["event"] == "send.rejected")
    assert (
        duplicate.items() >= {"code": "duplicate", "bus_id": sent["bus_id"], "sender": HOME_AFFAIRS}.items()
    )
    assert unauthenticated.items() >= {"code": "bad-signature", "claimed_agency": DISTRICT}.items()
    assert "sender" not in unauthenticated  # not authenticated: not known to be the sender
    assert not any(isinstance(v, bytes) for line in lines for v in line.values())


async def test_national_axis_counters_and_a_degraded_but_ready_node(tmp_path: Path, pki_dir: Path) -> None:
    async with _axis(tmp_path) as axis:
        settings = _settings(
            tmp_path, pki_dir, axis.url, f"test-{uuid.uuid4().hex[:10]}", breaker_failures="2"
        )
        try:
            async with _node(settings) as node:
                sent = await _send(node, "000.00.00.G12", 1)
                refused = await _send(node, "000.00.00.G77", 2)  # the axis knows no G77
                await _state(node, sent, "000.00.00.G12", DeliveryState.SENT_TO_AXIS)
                await _state(node, refused, "000.00.00.G77", DeliveryState.DEAD_LETTERED)
                samples = await scrape(node.api)
                assert value(samples, "bus_relay_out_attempts_total") == 2
                assert value(samples, "bus_relay_out_sent_total") == 1
                assert value(samples, "bus_relay_out_rejected_total") == 1
                assert value(samples, "bus_relay_out_dead_lettered_total") == 1
                assert value(samples, "bus_relay_out_retried_total") == 0
                assert value(samples, "bus_relay_in_envelopes_total", outcome="accepted") == 0
                assert value(samples, "bus_axis_circuit_open") == 0
                ready = (await _get(node.api, "/readyz")).json()
                assert ready["checks"]["national_axis"] == {"status": "ok"}

                axis.faults.down = True
                await _send(node, "000.00.00.G12", 3)

                async def opened() -> bool | None:
                    return True if node.axis is not None and node.axis.breaker.is_open else None

                await _eventually(opened, within_s=10, what="the circuit to open")
                samples = await scrape(node.api)
                assert value(samples, "bus_axis_circuit_open") == 1
                assert value(samples, "bus_axis_circuit_openings_total") == 1
                assert value(samples, "bus_relay_out_retried_total") >= 1
                answer = await _get(node.api, "/readyz")
                assert answer.status_code == 200  # local exchange goes on without the national axis
                assert answer.json()["ready"] is True
                assert answer.json()["checks"]["national_axis"]["status"] == "degraded"
        finally:
            await delete_broker_objects(settings)
