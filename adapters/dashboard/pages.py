"""Read-only pages: documents (search), one document with its timeline and receipts, inboxes, the
national axis."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.dashboard.context import Dashboard, Form, guarded
from adapters.dashboard.receipt_pages import ReceiptView, receipts_of
from adapters.dashboard.sessions import Session
from adapters.store import Cursor, DocumentSearch
from bus.checks import VN_TZ
from bus.delivery import DeliveryState
from bus.errors import InvalidOrganIdError
from bus.organ_id import OrganId

__all__ = ["LinkView", "parse_search", "routes"]

PAGE_SIZE = 50
_FIELDS = ("document_id", "code", "agency", "from", "to", "state")


def _day(value: str) -> dt.date:
    """``2026-11-20`` (a date input) or ``20/11/2026`` (typed by hand)."""
    if "/" in value:
        day, month, year = value.split("/")
        return dt.date(int(year), int(month), int(day))
    return dt.date.fromisoformat(value)


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=VN_TZ)


def parse_search(params: QueryParams) -> tuple[DocumentSearch, dict[str, str], list[str]]:
    """The search form's fields -> the search, the values to show back, and what is wrong with them.
    Days are Vietnamese days: "from 20/11" starts at 00:00 in Hanoi, "to 21/11" takes all of the 21st."""
    values = {name: params.get(name, "").strip() for name in _FIELDS}
    errors: list[str] = []
    for name, value in values.items():
        if "\x00" in value:  # PostgreSQL refuses NUL in text: never send it one
            errors.append("Ô tìm kiếm chứa ký tự không hợp lệ (NUL).")
            values[name] = value.replace("\x00", "")
    agency = None
    if values["agency"]:
        try:
            agency = str(OrganId.parse(values["agency"]))
        except InvalidOrganIdError:
            errors.append(f"Mã cơ quan «{values['agency']}» không đúng dạng V.Z.Y.MXX (ví dụ 000.00.01.H99).")
    bounds: dict[str, dt.datetime | None] = {"from": None, "to": None}
    for name in ("from", "to"):
        if values[name]:
            try:
                day = _day(values[name])
                bound = _start_of(day if name == "from" else day + dt.timedelta(days=1))
                bound.astimezone(dt.UTC)  # the store compares in UTC: 01/01/0001 in Hanoi is year 0
            except (ValueError, OverflowError):
                errors.append(f"Ngày «{values[name]}» không đúng (dd/mm/yyyy).")
                continue
            bounds[name] = bound
    state = None
    if values["state"]:
        try:
            state = DeliveryState(values["state"])
        except ValueError:
            errors.append(f"Không có trạng thái «{values['state']}».")
    search = DocumentSearch(
        document_id=values["document_id"][:256] or None,
        code=values["code"][:64] or None,
        agency=agency,
        since=bounds["from"],
        until=bounds["to"],
        state=state,
    )
    return search, values, errors


async def documents_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    search, values, errors = parse_search(request.query_params)
    after = None
    if cursor := request.query_params.get("after"):
        try:
            after = Cursor.decode(cursor)
        except ValueError:
            errors.append("Liên kết trang sau không hợp lệ; hãy tìm lại từ đầu.")
    page = None if errors else await dash.store.search_documents(search, after=after, limit=PAGE_SIZE)
    next_link = None
    if page is not None and page.next is not None:
        next_link = dash.link(request, "documents", {**values, "after": page.next.encode()})
    return dash.render(
        request,
        "documents.html",
        session,
        status=400 if errors else 200,
        values=values,
        errors=errors,
        page=page,
        next_link=next_link,
        first_link=dash.link(request, "documents", values) if after else None,
        agencies=dash.settings.agencies,
    )


async def document_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    bus_id = request.path_params["bus_id"]
    # A bus id is short and has no NUL (which PostgreSQL refuses in text): anything else is not found.
    ok = len(bus_id) <= 64 and "\x00" not in bus_id
    detail = await dash.store.document_detail(bus_id) if ok else None
    if detail is None:
        return dash.render(
            request,
            "error.html",
            session,
            status=404,
            title="Không tìm thấy văn bản",
            message=f"Trục không có văn bản nào mang mã {bus_id[:64].replace(chr(0), '')}.",
        )
    timeline = await dash.store.timeline(bus_id)
    signed = await receipts_of(dash, bus_id)
    receipts = None if signed is None else [ReceiptView.of(i, r) for i, r in enumerate(signed)]
    return dash.render(request, "document.html", session, doc=detail, timeline=timeline, receipts=receipts)


@dataclass(frozen=True, slots=True)
class InboxRow:
    agency: str
    name: str
    pending: int
    unfetched: int
    oldest_unfetched_at: dt.datetime | None
    waiting_s: float | None


async def inboxes_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    depths = await dash.store.inbox_depths()
    now = dash.clock()
    names = dash.agency_names
    codes = [str(a.organ_id) for a in dash.settings.agencies]
    codes += sorted(set(depths) - set(codes))  # an inbox of a code no longer configured still shows
    rows = []
    for code in codes:
        depth = depths.get(code)
        oldest = depth.oldest_unfetched_at if depth else None
        rows.append(
            InboxRow(
                agency=code,
                name=names.get(code, "(không có trong cấu hình)"),
                pending=depth.pending if depth else 0,
                unfetched=depth.unfetched if depth else 0,
                oldest_unfetched_at=oldest,
                waiting_s=(now - oldest).total_seconds() if oldest else None,
            )
        )
    rows.sort(key=lambda r: (-(r.waiting_s or -1), -r.pending, r.agency))
    return dash.render(request, "inboxes.html", session, rows=rows, now=now)


@dataclass(frozen=True, slots=True)
class LinkView:
    """The dict the node's ``link_status()`` returns, read defensively (a missing key is unknown)::

    {"configured": bool, "endpoint": str | None, "circuit": "closed" | "open",
     "failures": int, "open_since": datetime | None, "backlog": int | None,
     "last_error": str | None, "last_success_at": datetime | None}
    """

    configured: bool
    endpoint: str | None
    circuit_open: bool
    failures: int
    open_since: dt.datetime | None
    backlog: int | None
    last_error: str | None
    last_success_at: dt.datetime | None

    @classmethod
    def read(cls, status: Mapping[str, Any]) -> LinkView:
        def moment(key: str) -> dt.datetime | None:
            value = status.get(key)
            return value if isinstance(value, dt.datetime) else None

        backlog, failures = status.get("backlog"), status.get("failures")
        return cls(
            configured=bool(status.get("configured")),
            endpoint=str(status["endpoint"]) if status.get("endpoint") else None,
            circuit_open=status.get("circuit") == "open",
            failures=failures if isinstance(failures, int) else 0,
            open_since=moment("open_since"),
            backlog=backlog if isinstance(backlog, int) else None,
            last_error=str(status["last_error"]) if status.get("last_error") else None,
            last_success_at=moment("last_success_at"),
        )

    @property
    def state(self) -> tuple[str, str]:
        """(label, CSS class)."""
        if not self.configured:
            return "Chưa cấu hình (văn bản gửi ra ngoài tỉnh chờ trong hàng đợi)", "state"
        if self.circuit_open:
            return "Ngắt mạch: trục quốc gia không trả lời, tạm dừng gửi", "state bad"
        if self.failures or (self.last_error and not self.last_success_at):
            return "Đang lỗi", "state bad"
        return "Hoạt động", "state good"


async def axis_page(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    view, error = None, None
    try:
        view = LinkView.read(await dash.link_status())
    except Exception as exc:  # shown to the operator: this page exists to say what is wrong
        error = f"{type(exc).__name__}: {exc}"
    return dash.render(request, "axis.html", session, axis=view, error=error, now=dash.clock())


def routes(dash: Dashboard) -> list[Route]:
    return [
        Route("/", guarded(dash, documents_page), methods=["GET"], name="documents"),
        Route("/documents/{bus_id}", guarded(dash, document_page), methods=["GET"], name="document"),
        Route("/inboxes", guarded(dash, inboxes_page), methods=["GET"], name="inboxes"),
        Route("/axis", guarded(dash, axis_page), methods=["GET"], name="axis"),
    ]
