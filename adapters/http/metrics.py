"""Prometheus metrics of one node, served at ``GET /metrics`` in the text exposition format (0.0.4).

``/metrics`` asks for no agency signature: it is for the data centre's Prometheus, and the port it is
served on should be reachable from there only (firewall it like ``/readyz``). Nothing in it names a
document; agencies appear by their OrganId.

Counted as it happens (an increment on the request path, no I/O):

* ``bus_envelopes_accepted_total{kind}``: envelopes accepted through the agency API (document, status);
* ``bus_envelopes_rejected_total{reason}``: envelopes refused by the API, by the error code the client
  was answered (invalid-envelope, forged-sender, duplicate, too-large, broker-unavailable, bad-signature…);
* ``bus_intake_seconds``: histogram of the intake of an accepted envelope (checks, signatures, the
  broker's confirms, the store) as the API saw it;
* ``bus_inbox_wait_seconds``: histogram, per envelope fetched for the first time, of its time in the
  recipient's inbox (written by the inbox worker → first fetched). For a local delivery that is the
  end-to-end latency but for the broker hop (milliseconds): accepted → fetched.

Read when Prometheus scrapes:

* ``bus_deliveries{state}``: deliveries (one per document and recipient) by current state;
* ``bus_inbox_depth{agency}``: envelopes not yet acknowledged done or fail, per receiving agency;
* ``bus_inbox_oldest_pending_seconds{agency}``: age of the oldest of them (0 when none);
* ``bus_store_up``: 1 when those store queries answered, 0 when they failed (the gauges are then left
  out rather than reported stale);
* with a national axis: ``bus_relay_out_attempts_total`` (sendEdoc calls), ``bus_relay_out_sent_total``,
  ``bus_relay_out_retried_total`` (temporary failures parked for a retry), ``bus_relay_out_rejected_total``
  (refused by the axis), ``bus_relay_out_dead_lettered_total``, ``bus_relay_in_envelopes_total{outcome}``
  (accepted, duplicate, refused), ``bus_relay_reconcile_resent_total``, ``bus_axis_circuit_open`` (0
  closed, 1 open) and ``bus_axis_circuit_openings_total``. These count what this process did since it
  started, as Prometheus counters do.

The store is read at most once per ``store_max_age_s`` whatever the scrape rate, and concurrent scrapes
share one read: an unauthenticated endpoint must not be a way to load the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.store import StatusStore
from bus.delivery import DeliveryState

if TYPE_CHECKING:
    from adapters.national_axis import AxisLink

__all__ = ["CONTENT_TYPE", "NodeMetrics", "StoreGauges", "read_store_gauges"]

log = structlog.get_logger("bus.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
# Refusals known in advance start at 0, so that rate() and increase() see their first occurrence.
_KNOWN_REFUSALS = (
    "invalid-envelope",
    "forged-sender",
    "duplicate",
    "signature-invalid",
    "too-large",
    "broker-unavailable",
    "revocation-unavailable",
    "outcome-unknown",
)
_INTAKE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Agencies poll their inbox from every few seconds to a few times a day.
_WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 8 * 3600, 24 * 3600, 3 * 24 * 3600)


@dataclass(frozen=True, slots=True)
class StoreGauges:
    deliveries: dict[str, int]  # state -> deliveries in it
    inbox_depth: dict[str, int]  # agency -> envelopes pending
    oldest_pending: dict[str, dt.datetime]  # agency -> when its oldest pending envelope arrived


async def read_store_gauges(store: StatusStore) -> StoreGauges:
    """Three grouped queries, each served by an index (ix_deliveries_recipient_state,
    ix_inbox_agency_ack and the inbox's primary key); none reads a body."""
    depth = await store.inbox_counts()
    states = await store.delivery_counts()
    arrived = await store.oldest_pending()
    return StoreGauges(states, depth, arrived)


class _Scraped:
    """The gauges read at scrape time: the latest store read, and the national-axis link as it is."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self.gauges: StoreGauges | None = None
        self.agencies: Sequence[str] = ()
        self.axis: AxisLink | None = None
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("bus_store_up", "1 when the store answered this scrape's queries")
        up.add_metric([], 1 if self.gauges is not None else 0)
        yield up
        if self.gauges is not None:
            yield from self._store(self.gauges)
        if self.axis is not None:
            yield from _axis(self.axis)

    def _store(self, gauges: StoreGauges) -> Iterable[Metric]:
        by_state = GaugeMetricFamily(
            "bus_deliveries", "Deliveries (document x recipient) by current state", labels=["state"]
        )
        for state in sorted({*(s.value for s in DeliveryState), *gauges.deliveries}):
            by_state.add_metric([state], gauges.deliveries.get(state, 0))
        yield by_state
        depth = GaugeMetricFamily(
            "bus_inbox_depth", "Envelopes not yet acknowledged done or fail, per agency", labels=["agency"]
        )
        age = GaugeMetricFamily(
            "bus_inbox_oldest_pending_seconds",
            "Age of the oldest envelope not yet acknowledged done or fail, per agency (0 when none)",
            labels=["agency"],
        )
        now = self._clock()
        for agency in sorted({*self.agencies, *gauges.inbox_depth}):
            depth.add_metric([agency], gauges.inbox_depth.get(agency, 0))
            arrived = gauges.oldest_pending.get(agency)
            age.add_metric([agency], 0.0 if arrived is None else max((now - arrived).total_seconds(), 0.0))
        yield depth
        yield age


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _axis(link: AxisLink) -> Iterable[Metric]:
    out = link.out
    yield _counter("bus_relay_out_attempts", "sendEdoc calls to the national axis", out.attempts)
    yield _counter("bus_relay_out_sent", "Envelopes the national axis took", out.sent)
    yield _counter("bus_relay_out_retried", "Temporary failures parked for a retry", out.retried)
    yield _counter("bus_relay_out_rejected", "Envelopes the national axis refused", out.rejected)
    yield _counter("bus_relay_out_dead_lettered", "Outbound messages dead-lettered", out.dead_lettered)
    arrived = CounterMetricFamily(
        "bus_relay_in_envelopes", "Envelopes taken from the national axis, by outcome", labels=["outcome"]
    )
    arrived.add_metric(["accepted"], link.into.accepted)
    arrived.add_metric(["duplicate"], link.into.duplicates)
    arrived.add_metric(["refused"], link.into.refused)
    yield arrived
    yield _counter(
        "bus_relay_reconcile_resent",
        "Envelopes sent again because the national axis had lost them",
        link.reconciler.resent,
    )
    circuit = GaugeMetricFamily("bus_axis_circuit_open", "National axis circuit: 0 closed, 1 open")
    circuit.add_metric([], 1 if link.breaker.is_open else 0)
    yield circuit
    yield _counter("bus_axis_circuit_openings", "Times the circuit opened", link.breaker.openings)


class NodeMetrics:
    """One node's metrics, in a registry of its own (several nodes in one process do not collide)."""

    def __init__(
        self,
        *,
        store_max_age_s: float = 5.0,
        store_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "bus_envelopes_accepted",
            "Envelopes accepted through the agency API, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "bus_envelopes_rejected",
            "Envelopes the agency API refused, by the error code answered",
            ["reason"],
            registry=self.registry,
        )
        self.intake_seconds = Histogram(
            "bus_intake_seconds",
            "Intake of an accepted envelope, request body read to 202",
            buckets=_INTAKE_BUCKETS,
            registry=self.registry,
        )
        self.inbox_wait_seconds = Histogram(
            "bus_inbox_wait_seconds",
            "Time in the recipient's inbox before its first fetch (accepted to fetched, local deliveries)",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        for kind in ("document", "status"):
            self.accepted.labels(kind)
        for reason in _KNOWN_REFUSALS:
            self.rejected.labels(reason)
        self.store_max_age_s = store_max_age_s
        self.store_timeout_s = store_timeout_s
        self._clock = clock
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._scraped = _Scraped(wall_clock)
        self.registry.register(self._scraped)

    def watch_axis(self, link: AxisLink | None) -> None:
        """Report the national-axis link's counters and circuit (None: no link, no such metrics)."""
        self._scraped.axis = link

    def envelope_accepted(self, kind: str, seconds: float) -> None:
        self.accepted.labels(kind).inc()
        self.intake_seconds.observe(seconds)

    def envelope_rejected(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def first_fetch(self, received_at: dt.datetime, fetched_at: dt.datetime) -> None:
        self.inbox_wait_seconds.observe(max((fetched_at - received_at).total_seconds(), 0.0))

    async def exposition(self, store: StatusStore, agencies: Sequence[str] = ()) -> bytes:
        """The text format, the store's gauges read afresh unless read within ``store_max_age_s``."""
        self._scraped.agencies = agencies
        async with self._lock:  # concurrent scrapes wait for one read and then share it
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self.store_max_age_s:
                try:
                    self._scraped.gauges = await asyncio.wait_for(
                        read_store_gauges(store), self.store_timeout_s
                    )
                except Exception as exc:
                    self._scraped.gauges = None
                    log.warning("metrics.store_failed", error=type(exc).__name__, detail=str(exc)[:300])
                self._read_at = self._clock()
        return generate_latest(self.registry)
