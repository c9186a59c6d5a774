"""The dashboard as the dashboard tests reach it: served by ``Node.http_app`` (the agency API with the
dashboard mounted at ``/dashboard``, as ``bus serve`` serves it) on a real store, through httpx."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
from aio_pika.abc import AbstractRobustConnection
from starlette.types import ASGIApp

from adapters.dashboard import LoginThrottle, create_dashboard
from adapters.http import ApiContext
from adapters.store import StatusStore
from bus.intake import Intake
from bus.replay import ReplayOutcome, ReplayResult
from bus.settings import load_settings
from entrypoints.runtime import Node
from tests.conftest import ROOT
from tests.integration.dashboard_seed import OPERATOR, PASSWORD, Sample, dashboard_settings, record_sample

NOW = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
TTL_S = 3600
CLIENT = "127.0.0.1"  # the address every request of Env.client comes from


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


class FakeReplay:
    """Records what it was asked to replay and marks it replayed in the store, as the real one does."""

    def __init__(self, store: StatusStore) -> None:
        self.store, self.calls = store, list[list[int]]()

    async def __call__(self, ids: list[int]) -> list[ReplayResult]:
        self.calls.append(ids)
        results = []
        for i in ids:
            item = await self.store.mark_replayed(i, NOW)
            outcome = ReplayOutcome.UNKNOWN if item is None else ReplayOutcome.REPLAYED
            results.append(ReplayResult(i, outcome, "bus.inbox.000.01.21.H99", error="no dead letter"))
        return results


class Env:
    def __init__(
        self, app: ASGIApp, client: httpx.AsyncClient, store: StatusStore, sample: Sample, replay: FakeReplay
    ) -> None:
        self.app, self.client, self.store, self.sample, self.replay = app, client, store, sample, replay
        self.clock = FakeClock()
        self.link: dict[str, Any] = {
            "configured": True,
            "endpoint": "https://truc.example/vdxp",
            "backlog": 0,
        }

    def client_at(self, address: str) -> httpx.AsyncClient:
        """Another browser, at another address (its own cookies); the caller closes it."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://bus.test")


def node_app(store: StatusStore, dashboard: ASGIApp) -> ASGIApp:
    """``Node.http_app`` around *dashboard*: the agency API (never called here, so it has no intake or
    broker) with the dashboard mounted as ``bus serve`` mounts it."""
    settings = load_settings(ROOT / "config" / "example-province.toml")
    intake = cast(Intake, None)
    api = ApiContext(settings.topology, intake, store, {})
    node = Node(settings, store, cast(AbstractRobustConnection, None), intake, api, None, dashboard=dashboard)
    return node.http_app()


@contextlib.asynccontextmanager
async def dashboard_env(url: str, *, throttle: LoginThrottle | None = None) -> AsyncIterator[Env]:
    store = StatusStore.connect(url)
    await store.create_schema()
    sample = await record_sample(store, NOW)
    settings = dashboard_settings(load_settings(ROOT / "config" / "example-province.toml"), ttl_s=TTL_S)
    replay = FakeReplay(store)
    holder: list[Env] = []

    async def link_status() -> dict[str, Any]:
        if isinstance(holder[0].link, Exception):
            raise holder[0].link
        return holder[0].link

    dashboard = create_dashboard(
        settings,
        store,
        link_status=link_status,
        replay=replay,
        clock=lambda: holder[0].clock(),
        throttle=throttle,
    )
    app = node_app(store, dashboard)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(CLIENT, 123)), base_url="http://bus.test"
        ) as client:
            holder.append(Env(app, client, store, sample, replay))
            yield holder[0]
    finally:
        await store.close()


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def login(
    env: Env,
    password: str = PASSWORD,
    username: str = OPERATOR,
    next: str = "",
    *,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    """The login form, fetched (for its CSRF token) and posted, by *client* (``env.client``)."""
    http = client or env.client
    form = await http.get("/dashboard/login")
    data = {"username": username, "password": password, "csrf_token": csrf_of(form), "next": next}
    return await http.post("/dashboard/login", data=data)
