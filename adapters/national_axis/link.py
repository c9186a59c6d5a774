"""One process's link to the national axis: relay out, relay in and the reconciler, sharing one
client and one circuit breaker, started and stopped together (``bus serve`` builds it in
``entrypoints/runtime.py``)."""

from __future__ import annotations

from adapters.national_axis.breaker import CircuitBreaker
from adapters.national_axis.client import NationalAxisClient
from adapters.national_axis.reconciler import Reconciler
from adapters.national_axis.relay_in import RelayIn
from adapters.national_axis.relay_out import RelayOut

__all__ = ["AxisLink"]


class AxisLink:
    """Everything of one process's national-axis link, started and stopped together."""

    def __init__(
        self,
        client: NationalAxisClient,
        out: RelayOut,
        into: RelayIn,
        reconciler: Reconciler,
        breaker: CircuitBreaker,
    ):
        self.client = client
        self.out = out
        self.into = into
        self.reconciler = reconciler
        self.breaker = breaker

    async def start(self) -> None:
        await self.out.start()
        await self.into.start()
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.into.stop()
        await self.out.stop()
        await self.client.close()
