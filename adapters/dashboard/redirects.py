"""Redirects name a path of this site, never a host.

Issue 10, item 7: Starlette's slash redirects (``GET /dashboard`` → ``/dashboard/``, a route asked for
with a trailing slash) build an absolute URL from the request's ``Host`` header, so ``Host:
evil.example`` was answered ``Location: http://evil.example/dashboard/``: a cache or a proxy that keys on
the path alone can then send every operator to that host. A relative ``Location`` is allowed by RFC 9110
§10.2.2 and the browser resolves it against the address it asked, which the ``Host`` header cannot
change. This middleware rewrites any absolute ``Location`` to its path, query and fragment; the pages'
own redirects are paths already (:meth:`adapters.dashboard.context.Dashboard.link`). Neither the
dashboard nor the agency API ever sends a client to another site, so nothing legitimate is lost.
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RelativeRedirects", "relative_location"]


def relative_location(value: str) -> str:
    """*value* without scheme and host. A path that begins with ``//`` or ``/\\`` (which browsers read
    as a host: ``//evil.example/``) keeps a single leading slash."""
    parts = urllib.parse.urlsplit(value)
    if not (parts.scheme or parts.netloc or value.startswith(("//", "/\\", "\\"))):
        return value
    path = "/" + parts.path.lstrip("/\\")
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return path + query + fragment


class RelativeRedirects:
    """ASGI middleware: every ``Location`` header that leaves *app* is relative (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if (location := headers.get("location")) is not None:
                    headers["location"] = relative_location(location)
            await send(message)

        await self.app(scope, receive, send_relative)
