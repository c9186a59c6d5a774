"""HTML of the dashboard: Jinja2 templates with autoescaping on, Vietnamese labels, Vietnamese time.

Every value reaches the page through autoescaping (a subject or a dead letter's reason is whatever an
agency or a broker wrote). Times are stored in UTC and shown in Asia/Ho_Chi_Minh (UTC+7, no daylight
saving). Responses carry a Content-Security-Policy that allows only this dashboard's own stylesheet:
no script runs on these pages, not even an injected one.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus.checks import VN_TZ
from bus.delivery import DeliveryState
from bus.model import BussinessDocType, StatusCode

__all__ = ["SecurityHeaders", "make_environment", "read_form"]

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 16 * 1024

_BUSINESS_TYPES = {
    BussinessDocType.NEW: "Văn bản mới",
    BussinessDocType.REVOCATION: "Thu hồi",
    BussinessDocType.UPDATE: "Cập nhật",
    BussinessDocType.REPLACEMENT: "Thay thế",
}
_KINDS = {"document": "Văn bản", "status": "Gói tin trạng thái"}
_ROUTES = {"local": "Trong tỉnh", "outbound": "Qua trục quốc gia"}
# States an operator should look at: shown in a warning colour.
_BAD_STATES = {DeliveryState.FAIL, DeliveryState.FAILED, DeliveryState.DEAD_LETTERED, DeliveryState.RETRYING}


# What the bus gives a document (a UUID): only such a value is put in a link. A dead letter's x-bus-id is
# whatever a broker header held ("/", "?" or "#" in it would break the link, or the whole page).
_BUS_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def looks_like_bus_id(value: object) -> bool:
    return isinstance(value, str) and _BUS_ID.fullmatch(value) is not None


def local_time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return moment.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S")


def iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).isoformat()


def duration(seconds: float | None) -> str:
    """``3725`` -> ``"1 giờ 2 phút"``: the two largest units."""
    if seconds is None:
        return "-"
    left = max(0, int(seconds))
    parts: list[str] = []
    for size, unit in ((86400, "ngày"), (3600, "giờ"), (60, "phút"), (1, "giây")):
        if left >= size or (size == 1 and not parts):
            parts.append(f"{left // size} {unit}")
            left %= size
    return " ".join(parts[:2])


def state_label(value: str | DeliveryState) -> str:
    try:
        return DeliveryState(value).label
    except ValueError:
        return str(value)


def state_class(value: str | DeliveryState) -> str:
    try:
        state = DeliveryState(value)
    except ValueError:
        return "state"
    if state in _BAD_STATES:
        return "state bad"
    return "state good" if state is DeliveryState.DONE else "state"


def business_label(code: str | None) -> str:
    if not code:
        return "-"
    try:
        return f"{code}: {StatusCode(code).label}"
    except ValueError:
        return code


def business_type_label(value: int) -> str:
    try:
        return _BUSINESS_TYPES[BussinessDocType(value)]
    except ValueError:
        return str(value)


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML
        undefined=StrictUndefined,  # a misspelt name fails the test, not the page silently
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        local=local_time,
        iso=iso,
        duration=duration,
        state_label=state_label,
        state_class=state_class,
        business=business_label,
        business_type=business_type_label,
        kind=lambda v: _KINDS.get(v, v),
        route=lambda v: _ROUTES.get(v, v),
    )
    env.tests["bus_id"] = looks_like_bus_id
    env.globals["states"] = [(s.value, s.label) for s in DeliveryState]
    return env


async def read_form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (the only kind these pages send), at most
    :data:`MAX_FORM_BYTES`: read here rather than by Starlette, which needs python-multipart for it.
    Any other body has no fields, and so no CSRF token: the caller refuses it (403)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "the form is not UTF-8") from exc
    return parse_qs(text, keep_blank_values=True, max_num_fields=500)


_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """ASGI middleware: headers every dashboard response carries (pages hold document metadata that
    must not be cached, framed or sniffed into something else)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", _CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "same-origin")
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)
