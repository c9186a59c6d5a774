"""Revocation checking as Prometheus metrics, read from a :class:`CrlRegistry` when scraped (issue 10).

* ``bus_crl_fresh{ca}``: 1 while the CA's CRL is held and before its ``nextUpdate``, else 0 (alert on 0);
* ``bus_crl_next_update_timestamp_seconds{ca}``: the held CRL's ``nextUpdate`` (absent before one loads);
* ``bus_crl_refresh_failures_total{ca}``: failed downloads or unusable CRLs;
* ``bus_certificates_revoked_refused_total{ca}``: certificates refused because the CRL lists them;
* ``bus_revocation_unknown_refused_total{ca}``: refused because the status could not be checked (policy
  ``refuse``);
* ``bus_revocation_unchecked_total{ca,kind}``: accepted without a check (policy ``accept-and-flag``;
  kind ``stale``, ``unavailable``, ``not-covered``, or ``no-crl`` for a CA, root or intermediate, without
  a CRL configured).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bus.dsig.revocation import CrlRegistry

__all__ = ["RevocationCollector"]


class RevocationCollector:
    """A custom collector (``registry.register(RevocationCollector(crls))``): no I/O, no state of its own."""

    def __init__(
        self, registry: CrlRegistry, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    ) -> None:
        self._registry = registry
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        fresh = GaugeMetricFamily("bus_crl_fresh", "1 while the CA's CRL is held and current", labels=["ca"])
        next_update = GaugeMetricFamily(
            "bus_crl_next_update_timestamp_seconds", "nextUpdate of the CRL held", labels=["ca"]
        )
        failures = CounterMetricFamily(
            "bus_crl_refresh_failures", "failed CRL downloads or unusable CRLs", labels=["ca"]
        )
        for source in self._registry.sources:
            status = self._registry.status(source)
            crl = status.crl
            fresh.add_metric([source.ca_name], float(crl is not None and now <= crl.next_update))
            if crl is not None:
                next_update.add_metric([source.ca_name], crl.next_update.timestamp())
            failures.add_metric([source.ca_name], float(status.failures))
        yield from (fresh, next_update, failures)
        revoked = CounterMetricFamily(
            "bus_certificates_revoked_refused", "certificates refused as revoked", labels=["ca"]
        )
        unknown = CounterMetricFamily(
            "bus_revocation_unknown_refused", "certificates refused: revocation not checkable", labels=["ca"]
        )
        unchecked = CounterMetricFamily(
            "bus_revocation_unchecked",
            "accepted without a revocation check (accept-and-flag)",
            labels=["ca", "kind"],
        )
        for ca, count in self._registry.refused_revoked.items():
            revoked.add_metric([ca], float(count))
        for ca, count in self._registry.refused_unknown.items():
            unknown.add_metric([ca], float(count))
        for (ca, kind), count in self._registry.unchecked.items():
            unchecked.add_metric([ca, kind], float(count))
        yield from (revoked, unknown, unchecked)
