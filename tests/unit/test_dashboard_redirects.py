"""Redirects of the node name a path, never a host (issue 10, item 7): the rewrite of ``Location``."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from adapters.dashboard.redirects import RelativeRedirects, relative_location


@pytest.mark.parametrize(
    ("location", "relative"),
    [
        ("http://evil.example/dashboard/", "/dashboard/"),
        (
            "https://evil.example:8443/dashboard/login?next=%2Fdashboard%2F#x",
            "/dashboard/login?next=%2Fdashboard%2F#x",
        ),
        ("//evil.example/dashboard/", "/dashboard/"),  # protocol-relative: another host too
        ("http://evil.example//evil.example/x", "/evil.example/x"),  # a path that would read as a host
        ("/\\evil.example/x", "/evil.example/x"),  # browsers read "/\" as "//"
        ("http://evil.example", "/"),
        ("/dashboard/login?logged_out=1", "/dashboard/login?logged_out=1"),  # a path stays as it is
        ("/dashboard/", "/dashboard/"),
    ],
)
def test_a_location_keeps_its_path_and_loses_its_host(location: str, relative: str) -> None:
    assert relative_location(location) == relative


@pytest.mark.asyncio
async def test_the_middleware_rewrites_the_routers_slash_redirect() -> None:
    async def page(request: Request) -> Response:
        return Response("ok")

    async def elsewhere(request: Request) -> Response:
        return RedirectResponse("http://evil.example/page", status_code=303)

    app = Starlette(routes=[Route("/page", page), Route("/go", elsewhere)])
    app.add_middleware(RelativeRedirects)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bus.test") as client:
        slash = await client.get("/page/", headers={"Host": "evil.example"})
        go = await client.get("/go")
    assert (slash.status_code, slash.headers["location"]) == (307, "/page")
    assert (go.status_code, go.headers["location"]) == (303, "/page")
