"""One ``bus serve`` process: the broker, the store, the intake, the inbox worker and the HTTP API.

Processes are stateless: run several against the same RabbitMQ and database and they share the work
(RabbitMQ gives each inbox message to one consumer; the store's unique keys absorb any repeat). Start-up
is idempotent: the broker topology and the tables are declared every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from aio_pika.abc import AbstractRobustConnection
from starlette.applications import Starlette

from adapters.dashboard import LoginThrottle, RelativeRedirects, create_dashboard
from adapters.http import ApiContext, create_app
from adapters.http.health import Readiness, axis_check, broker_check, queues_check
from adapters.http.metrics import NodeMetrics
from adapters.http.protocol import HeadLimits, LimitedHttpToolsProtocol
from adapters.national_axis import AxisLink, CircuitBreaker, NationalAxisClient, Reconciler, RelayIn, RelayOut
from adapters.rabbitmq import BrokerNames, DeadLetterWorker, InboxWorker, cancel_task, declare_topology
from adapters.store import StatusStore
from adapters.store.leadership import Leadership
from bus.dsig.crl_metrics import RevocationCollector
from bus.dsig.crl_refresh import CrlRefresher
from bus.errors import BrokerError, ConfigError, StoreError
from bus.intake import BodyPolicy, Intake
from bus.receipts import Notary
from bus.replay import ReplayResult, replay
from bus.settings import Settings, StoreSettings
from bus.topology import AgencyTransport, Topology
from entrypoints.amqp_agencies import AgencyLink, http_inboxes, start_agency_link
from entrypoints.audit import audit_job, notary, record_start
from entrypoints.bootstrap import (
    _cas_without_crl,
    broker_names,
    connect_broker,
    intake_policy,
    new_publisher,
    node_identity,
    open_store,
    revocation_registry,
    safe_url,
)

__all__ = ["Node"]

log = structlog.get_logger("bus.node")


@dataclass
class Node:
    settings: Settings
    store: StatusStore
    connection: AbstractRobustConnection
    intake: Intake
    api: ApiContext
    worker: InboxWorker | None
    axis: AxisLink | None = None
    dead_letters: DeadLetterWorker | None = None
    dashboard: Starlette | None = None
    crl_refresher: CrlRefresher | None = None
    agencies: AgencyLink | None = None  # the AMQP agencies' consumers (docs/amqp-agencies.md)
    collector: asyncio.Task[None] | None = None  # the body store's garbage collection
    auditor: asyncio.Task[None] | None = None  # the audit log's checkpoints and retention

    def http_app(self) -> Starlette:
        """The agency API, with the operators' dashboard at ``/dashboard`` when operators are configured."""
        app = create_app(self.api)
        if self.dashboard is not None:
            app.mount("/dashboard", self.dashboard)
        # The router's slash redirects (GET /dashboard -> /dashboard/, /v1/inbox/ -> /v1/inbox) would
        # name the host of the request's Host header: every Location leaves as a path (issue 10, item 7).
        app.add_middleware(RelativeRedirects)
        return app

    @classmethod
    async def start(cls, settings: Settings, *, workers: bool = True) -> Node:
        """Connect, declare, and start consuming (with *workers*). Raises ConfigError or BrokerError."""
        identity = node_identity(settings)
        crls = revocation_registry(settings)
        for ca in _cas_without_crl(settings, crls):
            log.warning("revocation.not_checked", ca=ca, reason="no [[revocation.crls]] entry for this CA")
        policy = intake_policy(settings, crls)
        topology = settings.topology
        store = open_store(settings)
        try:
            await store.create_schema()
            # create_all adds indexes only with new tables: a store made before them gets them here.
            await store.create_dashboard_indexes()
        except Exception as exc:
            await store.close()
            where = safe_url(settings.database.url)
            raise ConfigError(f"cannot open the status store {where}: {exc}") from exc
        try:
            # The configuration this process runs with, first in its audit chain (issue 15 item 1).
            await record_start(store, settings, command="serve" if workers else "serve --no-workers")
        except Exception as exc:
            await store.close()
            raise ConfigError(f"cannot write the audit log: {exc}") from exc
        try:
            connection = await connect_broker(settings)
        except BrokerError:
            await store.close()
            raise
        names = broker_names(settings)
        declare = await connection.channel()
        await declare_topology(
            declare,
            topology,
            names,
            retry_delays=settings.national_axis.retry_delays_ms,
            replicas=settings.amqp.quorum_replicas,
        )
        await declare.close()
        publisher = await new_publisher(connection, settings)
        bodies = BodyPolicy(settings.store.inline_max_bytes, settings.store.inline_max_recipients)
        intake = Intake(
            topology, identity, publisher, store, policy, bodies=store, body_policy=bodies, audit=store
        )
        secrets = {str(a.organ_id): s for a in settings.agencies if (s := settings.secret_of(a)) is not None}
        api = ApiContext(
            topology,
            intake,
            store,
            secrets,
            max_body_bytes=settings.http.max_body_bytes,
            clock_skew_s=settings.http.clock_skew_s,
            metrics=NodeMetrics(),
            notary=notary(settings, identity),
            readiness=Readiness(
                {
                    "broker": broker_check(connection),
                    "queues": queues_check(connection, _vital_queues(topology, names)),
                }
            ),
        )
        crl_refresher = None
        if crls is not None:
            # Loaded before anything can reach the intake (the relay in starts below), then refreshed in
            # the background: verification only ever reads what is held (bus/dsig/crl_refresh.py).
            revocation = settings.revocation
            crl_refresher = CrlRefresher(
                crls,
                refresh_s=revocation.refresh_s,
                retry_s=revocation.retry_s,
                timeout_s=revocation.fetch_timeout_s,
                max_bytes=revocation.max_crl_bytes,
            )
            await crl_refresher.start()
            api.metrics.registry.register(RevocationCollector(crls))
        worker = None
        if workers:
            consume = await connection.channel()
            await consume.set_qos(prefetch_count=settings.amqp.prefetch)
            # Dead letters of poison messages go through a confirming channel of their own.
            # AMQP agencies' inbox queues are the agency deliveries' (entrypoints/amqp_agencies.py).
            worker = InboxWorker(
                consume, http_inboxes(topology), names, store, await new_publisher(connection, settings)
            )
            await worker.start()
        dead_letters = None
        if workers:
            # Dead letters go to the store, where operators list and replay them (bus deadletters).
            dead_channel = await connection.channel()
            await dead_channel.set_qos(prefetch_count=16)
            dead_letters = DeadLetterWorker(dead_channel, names, store)
            await dead_letters.start()
        agencies = await start_agency_link(settings, connection, names, intake, store) if workers else None
        axis = None
        if workers and settings.national_axis.endpoint is not None:
            axis = await _axis_link(settings, connection, names, store, intake)
            api.readiness.checks["national_axis"] = axis_check(axis.breaker)
            api.metrics.watch_axis(axis)
        dashboard = None
        if settings.dashboard.enabled:
            dashboard = await _dashboard(settings, connection, names, store, axis, api.notary)
        log.info(
            "node.started",
            node=str(settings.node.organ_id),
            agencies=len(settings.agencies),
            prefix=names.prefix,
            workers=workers,
            national_axis=settings.national_axis.endpoint,
        )
        node = cls(
            settings, store, connection, intake, api, worker, axis, dead_letters, dashboard, crl_refresher
        )
        node.agencies = agencies
        if workers:
            # One gateway at a time collects (adapters/store/leadership.py); another takes over if it dies.
            collecting = store.leadership(
                f"{names.prefix}:collect-bodies", check_s=settings.store.leader_check_s
            )
            node.collector = asyncio.create_task(
                _lead(collecting, lambda: _collect_bodies(store, settings.store))
            )
            if settings.audit.enabled:
                # Checkpoints, time-stamps and retention: one gateway at a time (entrypoints/audit.py).
                auditing = store.leadership(f"{names.prefix}:audit", check_s=settings.store.leader_check_s)
                node.auditor = asyncio.create_task(
                    _lead(auditing, lambda: audit_job(store, settings, identity))
                )
        return node

    async def stop(self) -> None:
        await cancel_task(self.collector)
        await cancel_task(self.auditor)
        if self.axis is not None:
            with contextlib.suppress(Exception):
                await self.axis.stop()
        if self.agencies is not None:
            await self.agencies.stop()
        if self.worker is not None:
            with contextlib.suppress(Exception):
                await self.worker.stop()
        if self.dead_letters is not None:
            with contextlib.suppress(Exception):
                await self.dead_letters.stop()
        with contextlib.suppress(Exception):
            await self.connection.close()
        if self.crl_refresher is not None:
            await self.crl_refresher.stop()
        await self.store.close()
        log.info("node.stopped")

    async def serve(self, *, http: bool = True) -> None:
        """Run the HTTP API (and the workers started with the node) until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = None
        tasks: list[asyncio.Task[None]] = []
        if http:
            http_settings = self.settings.http
            head_limits = HeadLimits(
                http_settings.max_header_bytes, http_settings.max_headers, http_settings.header_timeout_s
            )
            config = uvicorn.Config(
                self.http_app(),
                host=self.settings.http.host,
                port=self.settings.http.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=10,
                # httptools, with the limits on request heads that it lacks (issue 10 item 4).
                http=LimitedHttpToolsProtocol.with_limits(head_limits),
                ws="none",  # no WebSocket route: an Upgrade request is served as plain HTTP
            )
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve()))
            log.info("http.listening", host=self.settings.http.host, port=self.settings.http.port)
        waiter = asyncio.create_task(_wait(stop))
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        log.info("node.stopping")
        self.api.readiness.stopping = True  # /readyz answers 503: the load balancer drains this node
        if server is not None and waiter in done and self.settings.http.drain_s > 0:
            # Keep answering while the load balancer notices the 503 and stops sending here.
            log.info("http.draining", seconds=self.settings.http.drain_s)
            await asyncio.sleep(self.settings.http.drain_s)
        if self.axis is not None:
            await self.axis.stop()
            self.axis = None
        if self.agencies is not None:
            await self.agencies.stop()  # no new envelopes or acknowledgements; those in hand finish
            self.agencies = None
        await cancel_task(self.collector)
        self.collector = None
        await cancel_task(self.auditor)
        self.auditor = None
        if self.worker is not None:
            await self.worker.stop()  # no new messages; in-flight ones finish or return to the queue
        if self.dead_letters is not None:
            await self.dead_letters.stop()
            self.dead_letters = None
        if server is not None:
            server.should_exit = True
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        waiter.cancel()
        for task in done:
            if task is not waiter and (error := task.exception()) is not None:
                raise error


async def _lead(leadership: Leadership, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """*job()* in a task of its own while this process holds *leadership*; cancelled when it is lost."""
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        task = asyncio.create_task(job())

    async def stop() -> None:
        nonlocal task
        await cancel_task(task)
        task = None

    await leadership.serve(start, stop)


async def _collect_bodies(store: StatusStore, section: StoreSettings) -> None:
    """Delete the bodies nothing holds any more, retention passed, a batch per transaction, every
    ``gc_interval_s`` (docs/data-path.md). One gateway at a time runs it (its leadership)."""
    retention = dt.timedelta(days=section.body_retention_days)
    while True:
        try:
            while True:
                now = dt.datetime.now(dt.UTC)
                deleted = await store.collect_bodies(now, retention=retention, limit=section.gc_batch)
                if deleted:
                    log.info("bodies.collected", deleted=deleted)
                if deleted < section.gc_batch:
                    break
        except StoreError as exc:  # the database is down: the next round tries again
            log.error("bodies.collect_failed", error=str(exc))
        await asyncio.sleep(section.gc_interval_s)


async def _axis_link(
    settings: Settings,
    connection: AbstractRobustConnection,
    names: BrokerNames,
    store: StatusStore,
    intake: Intake,
) -> AxisLink:
    """Relay out (outbound queue → national axis) and relay in (national axis → local inboxes)."""
    axis = settings.national_axis
    if axis.endpoint is None or axis.secret is None:  # NationalAxisSettings checks this already
        raise ConfigError("national_axis.endpoint and national_axis.secret are both required")
    client = NationalAxisClient(
        axis.endpoint,
        axis.system_id or str(settings.node.organ_id),
        axis.secret.get_secret_value(),
        timeout=axis.timeout_s,
    )
    breaker = CircuitBreaker(threshold=axis.breaker_failures, open_s=axis.breaker_open_s)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=axis.prefetch)
    publisher = await new_publisher(connection, settings)
    link = AxisLink(
        client,
        RelayOut(channel, names, store, publisher, client, breaker, retry_delays_ms=axis.retry_delays_ms),
        RelayIn(
            client,
            intake,
            publisher,
            breaker,
            store=store,
            channel=channel,
            names=names,
            interval_s=axis.poll_interval_s,
        ),
        Reconciler(
            client,
            store,
            publisher,
            names,
            breaker,
            after_s=axis.reconcile_after_s,
            interval_s=axis.reconcile_interval_s,
        ),
        breaker,
        leadership=store.leadership(
            f"{names.prefix}:national-axis-in", check_s=settings.store.leader_check_s
        ),
    )
    await link.start()
    return link


async def _dashboard(
    settings: Settings,
    connection: AbstractRobustConnection,
    names: BrokerNames,
    store: StatusStore,
    axis: AxisLink | None,
    notary: Notary | None,
) -> Starlette:
    """The operators' dashboard, with what it needs from the node: the national axis link's state
    (with the outbound backlog from RabbitMQ), replays through a confirming channel, and the notary
    that signs the receipts a document's page lists."""
    publisher = await new_publisher(connection, settings)
    peek = await connection.channel()

    async def replay_ids(ids: list[int]) -> list[ReplayResult]:
        return await replay(store, publisher, ids, dt.datetime.now(dt.UTC))

    async def link_status() -> dict[str, Any]:
        queue = await peek.declare_queue(names.outbound_queue, passive=True)
        status: dict[str, Any] = {
            "configured": axis is not None,
            "endpoint": settings.national_axis.endpoint,
            "backlog": queue.declaration_result.message_count,
        }
        if axis is not None:
            status.update(
                circuit=axis.breaker.state.value,
                failures=axis.breaker.failures,
                open_since=axis.breaker.open_since(dt.datetime.now(dt.UTC)),
                last_error=axis.breaker.last_error,
                last_success_at=axis.breaker.last_success_at,
            )
        return status

    # Failed logins are counted in the store: every gateway behind the load balancer sees the same.
    throttle = LoginThrottle(store=store)
    return create_dashboard(
        settings, store, link_status=link_status, replay=replay_ids, throttle=throttle, notary=notary
    )


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the node owns SIGTERM/SIGINT and stops in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _vital_queues(topology: Topology, names: BrokerNames) -> list[str]:
    """The queues without which a node accepts nothing: where outbound envelopes and dead letters go,
    and the AMQP agencies' intake when there are any (``/readyz``'s ``queues`` check)."""
    vital = [names.outbound_queue, names.dead_letter_queue]
    if any(a.transport is AgencyTransport.AMQP for a in topology.agencies):
        vital.append(names.agency_intake)
    return vital
