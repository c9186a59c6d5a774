"""Readiness of a node for a load balancer (``GET /readyz``); ``/healthz`` only says the process lives.

``/readyz`` answers 200 ``{"ready": true, "checks": {...}}`` when the node can accept and deliver
envelopes, and 503 with the same shape otherwise. Each check has its own time limit (2 s by default)
and they run together, so the answer comes within that limit. The checks:

* ``database``: the store answers ``SELECT 1``;
* ``broker``: the RabbitMQ connection is open (not closed, not reconnecting); its detail names the node
  the gateway is on (``on 127.0.0.1:5682, node 2 of 3``);
* ``queues``: the queues the node's intake and relay need answer a passive declaration through that
  node. A quorum queue whose members lost their majority has no leader and does not answer: the node
  cannot accept envelopes for it, and is not ready (issue 14);
* ``national_axis`` (when one is configured): the link's circuit breaker. An open circuit reports
  ``degraded`` and the node stays **ready**: agencies of the province still send and receive among
  themselves, and what is bound for the national axis waits durably in the outbound queue until the
  circuit closes. Taking every node out of the load balancer because the national axis is down would
  stop local exchange too. The check reads the breaker, it does not call the axis: load balancers
  probe every few seconds, and the relay already talks to the axis all the time;
* ``node``: present and failed once the node began to stop (SIGTERM), so that the load balancer drains
  it while in-flight work finishes.

Like ``/metrics`` it asks for no signature; the port should be reachable from the load balancer and the
data centre's monitoring only. Failure details name the error's type only; the log has the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aio_pika.abc import AbstractConnection

__all__ = [
    "Check",
    "CheckResult",
    "CheckStatus",
    "PingPort",
    "Readiness",
    "axis_check",
    "broker_check",
    "database_check",
    "queues_check",
]

log = structlog.get_logger("bus.health")


class CheckStatus(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # working in part; the node stays ready
    FAILED = "failed"  # the node is not ready


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: CheckStatus
    detail: str | None = None  # answered to the caller
    cause: str | None = None  # logged only (an error message may name hosts and paths)

    def as_json(self) -> dict[str, str]:
        return {"status": self.status.value, **({"detail": self.detail} if self.detail else {})}


Check = Callable[[], Awaitable[CheckResult]]


class PingPort(Protocol):
    """The store's ``SELECT 1`` (:meth:`StatusStore.ping`)."""

    async def ping(self) -> None: ...


def database_check(store: PingPort) -> Check:
    async def check() -> CheckResult:
        await store.ping()
        return CheckResult(CheckStatus.OK)

    return check


def broker_check(connection: AbstractConnection) -> Check:
    async def check() -> CheckResult:
        # A robust connection that lost the broker is not "closed": it reconnects, with ``connected``
        # cleared until it is back.
        transport = connection.transport
        if connection.is_closed:
            return CheckResult(CheckStatus.FAILED, "connection closed")
        if not connection.connected.is_set() or transport is None or transport.connection.is_closed:
            return CheckResult(CheckStatus.FAILED, f"reconnecting to RabbitMQ{_where(connection, 'next')}")
        return CheckResult(CheckStatus.OK, _where(connection, "on").strip() or None)

    return check


def _where(connection: AbstractConnection, word: str) -> str:
    """`` on host:port, node 2 of 3`` for a connection to a cluster (adapters/rabbitmq/cluster.py)."""
    node = getattr(connection, "node", None)
    if not isinstance(node, str):
        return ""
    nodes = getattr(connection, "nodes", [])
    place = f", {getattr(connection, 'place', '')}" if len(nodes) > 1 else ""
    return f" {word} {node}{place}"


def queues_check(connection: AbstractConnection, queues: list[str]) -> Check:
    """Each of *queues* answers a passive declaration, on a channel of its own (a declaration that
    times out must not leave a late answer on a channel in use)."""

    async def check() -> CheckResult:
        if not queues or not connection.connected.is_set():
            return CheckResult(CheckStatus.OK, "not checked while reconnecting" if queues else None)
        channel = await connection.channel()
        try:
            for name in queues:
                try:
                    await asyncio.wait_for(channel.declare_queue(name, passive=True), 1.5)
                except TimeoutError:
                    return CheckResult(CheckStatus.FAILED, f"queue {name} does not answer: no quorum?")
            return CheckResult(CheckStatus.OK, f"{len(queues)} queues answer")
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    return check


class Circuit(Protocol):
    @property
    def is_open(self) -> bool: ...


def axis_check(breaker: Circuit) -> Check:
    async def check() -> CheckResult:
        if breaker.is_open:
            return CheckResult(
                CheckStatus.DEGRADED,
                "circuit open: outbound envelopes wait in the queue, local exchange works",
            )
        return CheckResult(CheckStatus.OK)

    return check


@dataclass
class Readiness:
    """The checks of ``/readyz`` besides the database's (the API adds it from its store)."""

    checks: dict[str, Check] = field(default_factory=dict)
    timeout_s: float = 2.0
    stopping: bool = False  # set when the node begins to stop
    _last: dict[str, CheckStatus] = field(default_factory=dict, repr=False)

    async def run(self, more: Mapping[str, Check] | None = None) -> tuple[bool, dict[str, dict[str, str]]]:
        """(ready, each check's result as JSON)."""
        checks = {**(more or {}), **self.checks}
        answers = await asyncio.gather(*(self._bounded(check) for check in checks.values()))
        results = dict(zip(checks, answers, strict=True))
        if self.stopping:
            results["node"] = CheckResult(CheckStatus.FAILED, "stopping: finishing in-flight work")
        for name, result in results.items():
            if self._last.get(name, CheckStatus.OK) is not result.status:  # changes, not every probe
                level = log.info if result.status is CheckStatus.OK else log.warning
                level("readiness.changed", check=name, status=result.status.value, cause=result.cause)
            self._last[name] = result.status
        ready = all(r.status is not CheckStatus.FAILED for r in results.values())
        return ready, {name: result.as_json() for name, result in results.items()}

    async def _bounded(self, check: Check) -> CheckResult:
        try:
            return await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            return CheckResult(CheckStatus.FAILED, f"no answer within {self.timeout_s:g} s")
        except Exception as exc:  # the check's own failure is its answer
            return CheckResult(CheckStatus.FAILED, type(exc).__name__, f"{type(exc).__name__}: {exc}"[:300])
