"""The operators' dashboard: a Starlette app that ``bus serve`` mounts at ``/dashboard``.

Every page but the login form needs an operator's session (:mod:`adapters.dashboard.sessions`); every
POST carries the session's CSRF token. Links are built from the mount point (``root_path``), so the
app works under any prefix. Pages: documents (search), a document and its timeline, inboxes, the
national-axis link (:mod:`adapters.dashboard.pages`), a document's signed receipts
(:mod:`adapters.dashboard.receipt_pages`), dead letters with replay
(:mod:`adapters.dashboard.dead_letter_pages`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from adapters.dashboard import dead_letter_pages, pages, receipt_pages
from adapters.dashboard.context import (
    Dashboard,
    Form,
    LinkStatusSource,
    Replayer,
    first,
    guarded,
    operator_action,
)
from adapters.dashboard.redirects import RelativeRedirects
from adapters.dashboard.render import HERE, SecurityHeaders, make_environment, read_form
from adapters.dashboard.sessions import COOKIE, Operators, Session, SessionCodec, SessionState
from adapters.dashboard.throttle import LoginThrottle
from adapters.store import StatusStore
from bus.errors import ConfigError
from bus.receipts import Notary
from bus.settings import Settings

__all__ = ["create_dashboard"]

log = structlog.get_logger("bus.dashboard")

LOGIN_FAILED = "Tên đăng nhập hoặc mật khẩu không đúng."


async def login_page(dash: Dashboard, request: Request) -> Response:
    state, session = dash.sessions.decode(request.cookies.get(COOKIE))
    if session is not None and session.logged_in:
        return RedirectResponse(dash.safe_next(request, request.query_params.get("next")), status_code=303)
    notice = None
    if request.query_params.get("expired") or state is SessionState.EXPIRED:
        notice = "Phiên làm việc đã hết hạn, vui lòng đăng nhập lại."
    elif request.query_params.get("logged_out"):
        notice = "Đã đăng xuất."
    fresh = session is None
    session = session or dash.sessions.new(None)
    response = dash.render(
        request,
        "login.html",
        session,
        next=request.query_params.get("next", ""),
        notice=notice,
        error=None,
        username="",
    )
    if fresh:
        dash.set_session(request, response, session)
    return response


async def login_submit(dash: Dashboard, request: Request) -> Response:
    form = await read_form(request)
    _, session = dash.sessions.decode(request.cookies.get(COOKIE))
    username, target = first(form, "username").strip(), first(form, "next")
    if session is None or not dash.sessions.csrf_ok(session, first(form, "csrf_token")):
        fresh = dash.sessions.new(None)
        response = dash.render(
            request,
            "login.html",
            fresh,
            status=403,
            next=target,
            notice=None,
            error="Biểu mẫu đăng nhập đã hết hạn (hoặc trình duyệt chặn cookie). Hãy đăng nhập lại.",
            username=username,
        )
        dash.set_session(request, response, fresh)
        return response
    client = _client(request)
    # Refused only when this address failed too often; a name that others keep failing is slowed
    # (admit waits) but never refused (issue 10, item 8: no lock-out of an operator by their name).
    wait_s = await dash.throttle.admit(username, client)
    if wait_s > 0:
        log.warning("dashboard.login_throttled", client=client, wait_s=wait_s)
        response = dash.render(
            request,
            "login.html",
            session,
            status=429,
            next=target,
            notice=None,
            error=f"Đăng nhập sai quá nhiều lần từ địa chỉ này. Hãy thử lại sau {wait_s} giây.",
            username=username,
        )
        response.headers["Retry-After"] = str(wait_s)
        return response
    if not await dash.operators.check(username, first(form, "password")):
        # The same answer whichever of the two was wrong (Operators.check also takes the same time).
        log.warning("dashboard.login_failed", username=username[:64], client=client)
        await operator_action(dash, "operator.login-failed", username, request)
        return dash.render(
            request,
            "login.html",
            session,
            status=401,
            next=target,
            notice=None,
            error=LOGIN_FAILED,
            username=username,
        )
    await dash.throttle.succeeded(username, client)  # in the store before the next try reads it
    log.info("dashboard.login", operator=username, client=client)
    await operator_action(dash, "operator.login", username, request)
    # A new session and CSRF token at login: a token seen before it is worth nothing after.
    operator = dash.sessions.new(username)
    redirect = RedirectResponse(dash.safe_next(request, target), status_code=303)
    dash.set_session(request, redirect, operator)
    return redirect


async def logout(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    log.info("dashboard.logout", operator=session.username)
    await operator_action(dash, "operator.logout", session.username, request)
    # Server-side, for every process: a copy of the cookie kept elsewhere stops working too.
    await dash.store.revoke_session(session.csrf, dt.datetime.fromtimestamp(session.expires, dt.UTC))
    response = RedirectResponse(dash.link(request, "login", {"logged_out": "1"}), status_code=303)
    response.delete_cookie(
        COOKIE, path=request.scope.get("root_path") or "/", httponly=True, samesite="strict"
    )
    return response


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def create_dashboard(
    settings: Settings,
    store: StatusStore,
    *,
    link_status: LinkStatusSource,
    replay: Replayer,
    clock: Callable[[], dt.datetime] = _now,
    throttle: LoginThrottle | None = None,
    notary: Notary | None = None,
) -> Starlette:
    """The dashboard app. *link_status* describes the national-axis link (see
    :class:`adapters.dashboard.pages.LinkView` for the keys read); *replay* sends dead letters back
    (:func:`bus.replay.replay` with the node's store, publisher and clock);
    *throttle* admits login tries (:class:`adapters.dashboard.throttle.LoginThrottle`'s defaults);
    *notary* signs the receipts a document's page lists (none without it)."""
    if not settings.dashboard.enabled:
        raise ConfigError(
            "the dashboard has no operators: add [[dashboard.operators]] (bus operator-password)"
        )
    operators = Operators(settings.dashboard)
    dash = Dashboard(
        settings,
        store,
        link_status,
        replay,
        clock,
        operators,
        SessionCodec(settings.dashboard, operators, clock),
        make_environment(),
        css=(HERE / "static" / "dashboard.css").read_bytes(),
        throttle=throttle or LoginThrottle(),
        notary=notary,
    )

    def bind(
        function: Callable[[Dashboard, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await function(dash, request)

        return endpoint

    async def stylesheet(request: Request) -> Response:
        return Response(dash.css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    routes = [
        Route("/login", bind(login_page), methods=["GET"], name="login"),
        Route("/login", bind(login_submit), methods=["POST"], name="login_submit"),
        Route("/logout", guarded(dash, logout, post=True), methods=["POST"], name="logout"),
        Route("/static/dashboard.css", stylesheet, methods=["GET"], name="css"),
        *pages.routes(dash),
        *receipt_pages.routes(dash),
        *dead_letter_pages.routes(dash),
    ]
    # RelativeRedirects: the router's own slash redirects (/dashboard/inboxes/ -> /dashboard/inboxes)
    # would otherwise name whatever host the request's Host header claimed (issue 10, item 7).
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders), Middleware(RelativeRedirects)])
    dash.router = app.router
    return app
