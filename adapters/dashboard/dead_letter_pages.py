"""Dead letters: the list with reasons, and a replay in two steps that work without JavaScript.

Ticking dead letters (or a row's own link) opens a confirmation page by GET, which changes nothing;
only its POST, with the session's CSRF token, sends them back (the node's ``replay`` callable), then
redirects to the outcome of each (a refresh sends nothing again). The confirmation form carries each
dead letter's replay count, sealed for the session: a dead letter replayed since the page was shown, or
one the page did not show, is not sent. Every replay is logged with the operator's name.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Sequence

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from adapters.dashboard.context import Dashboard, Form, first, guarded, operator_action
from adapters.dashboard.render import local_time
from adapters.dashboard.sessions import Session
from bus.errors import BusError
from bus.replay import ReplayOutcome, ReplayResult

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


_ID = re.compile(r"[0-9]{1,19}")
MAX_ID = 2**62  # larger ids are none of ours (and overflow SQLite's and PostgreSQL's bigint)
RESULT_TTL_S = 600  # how long the outcome of a replay can be shown again (refreshing the page)


def _id(value: str) -> int | None:
    """A dead letter's id: ASCII digits only (``str.isdigit`` takes "²", which ``int`` refuses)."""
    value = value.strip()
    if not _ID.fullmatch(value) or (number := int(value)) >= MAX_ID:
        return None
    return number


def _ids(values: Sequence[str]) -> tuple[list[int], list[str]]:
    ids: list[int] = []
    errors: list[str] = []
    for value in values:
        number = _id(value)
        if number is None:
            errors.append(f"«{value[:40]}» không phải số hiệu của thư lỗi.")
        elif number not in ids:
            ids.append(number)
    if not ids and not errors:
        errors.append("Chưa chọn thư lỗi nào.")
    if len(ids) > MAX_REPLAY:
        errors.append(f"Mỗi lần gửi lại tối đa {MAX_REPLAY} thư lỗi.")
    return ids, errors


def _seen(values: Sequence[str]) -> list[tuple[int, int]] | None:
    """The confirmation form's ``id:replay_count`` fields; None if one is not of that form."""
    seen: list[tuple[int, int]] = []
    for value in values:
        number, sep, count = value.partition(":")
        letter = _id(number)
        if not sep or letter is None or not _ID.fullmatch(count) or int(count) >= MAX_ID:
            return None
        seen.append((letter, int(count)))
    return seen


async def list_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    everything = request.query_params.get("all") == "1"
    before_id = _id(request.query_params.get("before", ""))
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
    found = {} if errors else await dash.store.dead_letters_by_id(ids)
    items = [found[i] for i in ids if i in found]
    # Each id with the replay count shown here: the POST refuses one replayed since (by someone else,
    # or by this same form submitted twice), and the seal refuses ids this page did not show.
    seen = [f"{item.id}:{item.replay_count}" for item in items]
    return dash.render(
        request,
        "replay_confirm.html",
        session,
        status=400 if errors else 200,
        errors=errors,
        items=items,
        seen=seen,
        seal=dash.sessions.seal(session, "replay-confirm", ",".join(seen)),
        missing=[i for i in ids if i not in found],
    )


async def replay_submit(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    """Replays what the confirmation page showed, then redirects to the outcome (Post/Redirect/Get: a
    refresh of the outcome page sends nothing again)."""
    values = form.get("seen", [])
    seen = _seen(values)
    if seen is None or not seen or len(seen) > MAX_REPLAY:
        errors = ["Biểu mẫu xác nhận không hợp lệ; hãy chọn lại thư lỗi cần gửi lại."]
    elif not dash.sessions.seal_ok(session, "replay-confirm", ",".join(values), first(form, "seal")):
        errors = ["Biểu mẫu xác nhận đã bị sửa hoặc không phải của phiên này; hãy mở lại trang xác nhận."]
    else:
        errors = []
    if seen is None or errors:
        return dash.render(
            request, "replay_confirm.html", session, status=400, errors=errors, items=[], missing=[]
        )
    skipped: list[tuple[int, str]] = []
    confirmed = {letter for letter, _ in seen}
    for value in form.get("id", []):  # a bare id: not on the confirmation page
        if (letter := _id(value)) is not None and letter not in confirmed:
            skipped.append((letter, "Không có trên trang xác nhận: không gửi lại."))
    current = await dash.store.dead_letters_by_id([letter for letter, _ in seen])
    ids: list[int] = []
    for letter, count in seen:
        item = current.get(letter)
        if item is not None and item.replay_count != count:
            skipped.append(
                (
                    letter,
                    f"Đã được gửi lại (lần {item.replay_count}, lúc {local_time(item.replayed_at)}) sau khi "
                    "trang xác nhận được mở: không gửi lại lần nữa. Hãy mở lại trang xác nhận nếu vẫn cần.",
                )
            )
        elif letter not in ids:
            ids.append(letter)
    results: list[ReplayResult] = []
    if ids:
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
        skipped=[letter for letter, _ in skipped],
    )
    if results:
        await operator_action(
            dash,
            "operator.replay",
            session.username,
            request,
            results={str(r.id): r.outcome.value for r in results},
        )
    outcome = {
        "e": int(dash.clock().timestamp()) + RESULT_TTL_S,
        "r": [[r.id, *describe(r)] for r in results],
        "s": skipped,
    }
    packed = json.dumps(outcome, ensure_ascii=False, separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(zlib.compress(packed, 9)).decode("ascii")
    query = {"r": token, "s": dash.sessions.seal(session, "replay-result", token)}
    return RedirectResponse(dash.link(request, "replay_result", query), status_code=303)


async def result_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    token, seal = request.query_params.get("r", ""), request.query_params.get("s", "")
    outcome = None
    if token and seal and dash.sessions.seal_ok(session, "replay-result", token, seal):
        try:
            outcome = json.loads(zlib.decompress(base64.urlsafe_b64decode(token), bufsize=65536))
        except (ValueError, zlib.error):
            outcome = None
    if not isinstance(outcome, dict) or outcome.get("e", 0) < dash.clock().timestamp():
        return dash.render(
            request,
            "error.html",
            session,
            status=404,
            title="Không còn kết quả gửi lại",
            message="Kết quả này đã hết hạn hoặc không phải của phiên này. Xem danh sách thư lỗi.",
        )
    rows = [(int(i), str(label), bool(ok)) for i, label, ok in outcome["r"]]
    skipped = [(int(i), str(message)) for i, message in outcome["s"]]
    found = await dash.store.dead_letters_by_id([i for i, *_ in rows])
    return dash.render(
        request,
        "replay_result.html",
        session,
        rows=[(*row, found.get(row[0])) for row in rows],
        skipped=skipped,
    )


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
        Route(
            "/dead-letters/replay/result", guarded(dash, result_page), methods=["GET"], name="replay_result"
        ),
    ]
