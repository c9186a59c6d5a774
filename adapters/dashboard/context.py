"""What every dashboard page handler gets (:class:`Dashboard`), and the guard of logged-in pages."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import structlog
from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Router

from adapters.dashboard.render import read_form
from adapters.dashboard.sessions import COOKIE, Operators, Session, SessionCodec, SessionState
from adapters.dashboard.throttle import LoginThrottle
from adapters.store import StatusStore
from bus.audit import Entry
from bus.receipts import Notary
from bus.replay import ReplayResult
from bus.settings import Settings

__all__ = [
    "Dashboard",
    "Form",
    "Handler",
    "LinkStatusSource",
    "Replayer",
    "first",
    "guarded",
    "operator_action",
]

log = structlog.get_logger("bus.dashboard")

LinkStatusSource = Callable[[], Awaitable[dict[str, Any]]]
Replayer = Callable[[list[int]], Awaitable[list[ReplayResult]]]
Form = dict[str, list[str]]
Handler = Callable[["Dashboard", Request, Session, Form], Awaitable[Response]]


@dataclass
class Dashboard:
    """What every page handler gets: the settings, the store and the node's callables."""

    settings: Settings
    store: StatusStore
    link_status: LinkStatusSource
    replay: Replayer
    clock: Callable[[], dt.datetime]
    operators: Operators
    sessions: SessionCodec
    env: Environment
    router: Router = field(default_factory=Router)
    css: bytes = b""
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    notary: Notary | None = None  # signs a document's receipts (bus/receipts.py); None: the node signs none

    @cached_property
    def agency_names(self) -> dict[str, str]:
        """Names by code, former codes included (a document addressed before a merger)."""
        names = {}
        for agency in self.settings.agencies:
            names[str(agency.organ_id)] = agency.name
            for alias in agency.aliases:
                names.setdefault(str(alias), f"{agency.name} (mã cũ)")
        return names

    def link(
        self, request: Request, name: str, /, query: Mapping[str, Any] | None = None, **params: Any
    ) -> str:
        """The path of a dashboard page, under whatever prefix the app is mounted at."""
        root: str = request.scope.get("root_path", "")
        path = root + str(self.router.url_path_for(name, **params))
        if query:
            path += "?" + urllib.parse.urlencode(
                {k: v for k, v in query.items() if v not in (None, "")}, doseq=True
            )
        return path

    def render(
        self, request: Request, template: str, session: Session | None, *, status: int = 200, **values: Any
    ) -> HTMLResponse:
        page = self.env.get_template(template).render(
            link=lambda name, /, query=None, **params: self.link(request, name, query, **params),
            session=session,
            province=self.settings.province,
            node=self.settings.node,
            names=self.agency_names,
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def set_session(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.sessions.encode(session),
            max_age=max(0, session.expires - int(self.clock().timestamp())),
            path=request.scope.get("root_path") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def safe_next(self, request: Request, value: str | None) -> str:
        """Where to go after the login: a page of this dashboard, never another site."""
        root = request.scope.get("root_path", "")
        if (
            value
            and value.startswith(root + "/")
            and not value.startswith("//")
            and "\\" not in value
            and "://" not in value
            and value.isprintable()
        ):
            return value
        return self.link(request, "documents")


def first(form: Form, name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def guarded(
    dash: Dashboard, handler: Handler, *, post: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """The handler runs only for a logged-in operator (others go to the login page), and a POST only
    with the session's CSRF token in its form (403 otherwise)."""

    async def endpoint(request: Request) -> Response:
        state, session = dash.sessions.decode(request.cookies.get(COOKIE))
        if session is not None and session.logged_in and await dash.store.session_revoked(session.csrf):
            state, session = SessionState.ABSENT, None  # logged out: the cookie is worth nothing now
        if session is None or not session.logged_in:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            query = {"next": target if request.method == "GET" else None}
            if state is SessionState.EXPIRED:
                query["expired"] = "1"
            return RedirectResponse(dash.link(request, "login", query), status_code=303)
        form: Form = {}
        if post:
            form = await read_form(request)
            if not dash.sessions.csrf_ok(session, first(form, "csrf_token")):
                log.warning("dashboard.csrf_refused", operator=session.username, path=request.url.path)
                return dash.render(
                    request,
                    "error.html",
                    session,
                    status=403,
                    title="Yêu cầu bị từ chối",
                    message="Biểu mẫu thiếu hoặc sai mã chống giả mạo (CSRF). Hãy mở lại trang và thử lại.",
                )
        return await handler(dash, request, session, form)

    return endpoint


async def operator_action(
    dash: Dashboard, kind: str, operator: str | None, request: Request, **fields: Any
) -> None:
    """An operator's action in the audit log (issue 15: logins, logouts, failed logins, replays), with
    the client's address. A log that cannot be written leaves the action logged here, and the error to
    the caller: an operator action the log does not show must not pass silently."""
    client = request.client.host if request.client is not None else None
    entry = Entry(kind, dash.clock(), {**fields, "operator": (operator or "")[:64], "client": client})
    await dash.store.audit_note(entry)
