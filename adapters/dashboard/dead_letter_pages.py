"""Dead letters: the list with reasons, and a replay in two steps that work without JavaScript.

Ticking dead letters (or a row's own link) opens a confirmation page by GET, which changes nothing;
only its POST, with the session's CSRF token, sends them back (the node's ``replay`` callable), and the
outcome of each is shown. Every replay is logged with the operator's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.dashboard.context import Dashboard, Form, guarded
from adapters.dashboard.render import local_time
from adapters.dashboard.sessions import Session
from adapters.rabbitmq.deadletters import ReplayOutcome, ReplayResult
from adapters.store.dashboard_queries import dead_letters_by_id
from bus.errors import BusError

__all__ = ["describe", "routes"]

log = structlog.get_logger("bus.dashboard")

PAGE_SIZE = 50
MAX_REPLAY = 100  # dead letters in one replay


def describe(result: ReplayResult) -> tuple[str, bool]:
    """What happened to one dead letter, in Vietnamese, and whether it went back."""
    if result.outcome is ReplayOutcome.REPLAYED:
        return f"Đã gửi lại vào hàng đợi {result.queue}", True
    if result.outcome is ReplayOutcome.REPLAYED_AGAIN:
        return (
            f"Đã gửi lại lần nữa vào hàng đợi {result.queue} (lần thứ {result.replay_count}; "
            f"lần trước lúc {local_time(result.previously_replayed_at)})",
            True,
        )
    if result.outcome is ReplayOutcome.UNKNOWN:
        return "Không có thư lỗi này", False
    return f"Không gửi lại được: {result.error}", False


def _ids(values: Sequence[str]) -> tuple[list[int], list[str]]:
    ids: list[int] = []
    errors: list[str] = []
    for value in values:
        if not value.strip().isdigit():
            errors.append(f"«{value[:40]}» không phải số hiệu của thư lỗi.")
        elif (number := int(value)) not in ids:
            ids.append(number)
    if not ids and not errors:
        errors.append("Chưa chọn thư lỗi nào.")
    if len(ids) > MAX_REPLAY:
        errors.append(f"Mỗi lần gửi lại tối đa {MAX_REPLAY} thư lỗi.")
    return ids, errors


async def list_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    everything = request.query_params.get("all") == "1"
    before = request.query_params.get("before", "")
    before_id = int(before) if before.isdigit() else None
    items = await dash.store.dead_letters(include_replayed=everything, limit=PAGE_SIZE, before_id=before_id)
    next_link = None
    if len(items) == PAGE_SIZE:
        next_link = dash.link(
            request, "dead_letters", {"all": "1" if everything else None, "before": items[-1].id}
        )
    return dash.render(
        request,
        "dead_letters.html",
        session,
        items=items,
        everything=everything,
        next_link=next_link,
    )


async def confirm_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    ids, errors = _ids(request.query_params.getlist("id"))
    found = {} if errors else await dead_letters_by_id(dash.store.engine, ids)
    return dash.render(
        request,
        "replay_confirm.html",
        session,
        status=400 if errors else 200,
        errors=errors,
        items=[found[i] for i in ids if i in found],
        missing=[i for i in ids if i not in found],
    )


async def replay_submit(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    ids, errors = _ids(form.get("id", []))
    if errors:
        return dash.render(
            request, "replay_confirm.html", session, status=400, errors=errors, items=[], missing=[]
        )
    try:
        results = await dash.replay(ids)
    except BusError as exc:  # the broker or the store is unreachable: nothing was replayed
        log.error("dashboard.replay_failed", operator=session.username, ids=ids, error=str(exc))
        return dash.render(
            request,
            "error.html",
            session,
            status=503,
            title="Không gửi lại được",
            message=f"Chưa thư lỗi nào được gửi lại: {exc}",
        )
    log.warning(
        "dashboard.replay",
        operator=session.username,
        results={r.id: r.outcome.value for r in results},
    )
    found = await dead_letters_by_id(dash.store.engine, ids)
    rows = [(r, *describe(r), found.get(r.id)) for r in results]
    return dash.render(request, "replay_result.html", session, rows=rows)


def routes(dash: Dashboard) -> list[Route]:
    return [
        Route("/dead-letters", guarded(dash, list_page), methods=["GET"], name="dead_letters"),
        Route("/dead-letters/replay", guarded(dash, confirm_page), methods=["GET"], name="replay_confirm"),
        Route(
            "/dead-letters/replay",
            guarded(dash, replay_submit, post=True),
            methods=["POST"],
            name="replay_submit",
        ),
    ]
