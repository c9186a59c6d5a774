"""The circuit breaker of the national-axis link, and the loop of the link's periodic work.

After several temporary failures in a row (:class:`CircuitBreaker`) the relay stops consuming (the
backlog waits in the outbound queue, attempts are not used up) and a probe asks the axis a cheap
question every little while; the first answer closes the circuit and sending resumes. Polling the
axis (relay in) and checking what it took (the reconciler) run only while the circuit is closed
(:func:`every`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from bus.errors import AxisUnavailableError

__all__ = ["CircuitBreaker", "CircuitState", "every"]

log = structlog.get_logger("bus.relay")


class CircuitState(enum.StrEnum):
    CLOSED = "closed"  # sending
    OPEN = "open"  # the axis is down: not sending, probing


class CircuitBreaker:
    """Counts temporary failures in a row; *threshold* of them open the circuit for *open_s*."""

    def __init__(
        self, *, threshold: int = 5, open_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self.state = CircuitState.CLOSED
        self.opened_at: float | None = None
        # For operators (the dashboard's axis page): the last answer and the last failure.
        self.last_success_at: dt.datetime | None = None
        self.last_failure_at: dt.datetime | None = None
        self.last_error: str | None = None
        self.openings = 0  # times the circuit opened (metrics)
        self.changed = asyncio.Event()

    def success(self) -> None:
        self._failures = 0
        self.last_success_at = dt.datetime.now(dt.UTC)
        if self.state is CircuitState.OPEN:
            self.state = CircuitState.CLOSED
            self.opened_at = None
            log.info("axis.circuit_closed")
            self.changed.set()

    def failure(self, error: str | None = None) -> None:
        self._failures += 1
        self.last_error = error or self.last_error
        self.last_failure_at = dt.datetime.now(dt.UTC)
        if self.state is CircuitState.CLOSED and self._failures >= self.threshold:
            self.state = CircuitState.OPEN
            self.opened_at = self._clock()
            self.openings += 1
            log.warning("axis.circuit_open", failures=self._failures, probe_every_s=self.open_s)
            self.changed.set()

    @property
    def is_open(self) -> bool:
        return self.state is CircuitState.OPEN

    @property
    def failures(self) -> int:
        """Temporary failures in a row."""
        return self._failures

    def open_since(self, now: dt.datetime) -> dt.datetime | None:
        """When the circuit opened, as a time of day (it keeps a monotonic clock)."""
        if self.opened_at is None:
            return None
        return now - dt.timedelta(seconds=self._clock() - self.opened_at)


async def every(
    interval_s: float,
    breaker: CircuitBreaker,
    work: Callable[[], Awaitable[object]],
    name: str,
    *,
    at_once: bool,
) -> None:
    """Run *work* every *interval_s* (± 20 %, so that several processes do not act in step) while the
    circuit is closed. An unreachable axis counts towards the breaker; any other failure (the store,
    the broker) is logged and the next round tries again: the loop itself never dies."""
    if not at_once:
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))  # noqa: S311 - not security
    while True:
        if not breaker.is_open:
            try:
                await work()
            except AxisUnavailableError as exc:
                breaker.failure(str(exc))
                log.warning(f"{name}_failed", error=str(exc))
            except Exception as exc:
                log.error(f"{name}_error", error=repr(exc))
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))  # noqa: S311 - not security
