"""One process's link to the national axis: relay out, relay in and the reconciler, sharing one
client and one circuit breaker, started and stopped together (``bus serve`` builds it in
``entrypoints/runtime.py``).

Relay out consumes the outbound queue, so every gateway runs it: RabbitMQ gives each envelope to one.
Relay in (it polls the axis) and the reconciler (it reads the axis's sent list) are not messages: with
a *leadership* (adapters/store/leadership.py) they run in one gateway at a time, and move to another
when that one dies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from adapters.national_axis.breaker import CircuitBreaker
from adapters.national_axis.client import NationalAxisClient
from adapters.national_axis.reconciler import Reconciler
from adapters.national_axis.relay_in import RelayIn
from adapters.national_axis.relay_out import RelayOut

__all__ = ["AxisLink", "LeadershipPort"]


class LeadershipPort(Protocol):
    """Runs a job while this process holds its lock (:class:`adapters.store.leadership.Leadership`)."""

    async def serve(
        self, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
    ) -> None: ...


class AxisLink:
    """Everything of one process's national-axis link, started and stopped together."""

    def __init__(
        self,
        client: NationalAxisClient,
        out: RelayOut,
        into: RelayIn,
        reconciler: Reconciler,
        breaker: CircuitBreaker,
        *,
        leadership: LeadershipPort | None = None,
    ):
        self.client = client
        self.out = out
        self.into = into
        self.reconciler = reconciler
        self.breaker = breaker
        self._leadership = leadership
        self._singletons: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.out.start()
        if self._leadership is None:
            await self._start_singletons()
        else:
            self._singletons = asyncio.create_task(
                self._leadership.serve(self._start_singletons, self._stop_singletons)
            )

    async def _start_singletons(self) -> None:
        await self.into.start()
        self.reconciler.start()

    async def _stop_singletons(self) -> None:
        await self.reconciler.stop()
        await self.into.stop()

    async def stop(self) -> None:
        if self._singletons is None:
            await self._stop_singletons()
        else:
            self._singletons.cancel()  # the leadership stops relay in and the reconciler
            await asyncio.gather(self._singletons, return_exceptions=True)
            self._singletons = None
        await self.out.stop()
        await self.client.close()
