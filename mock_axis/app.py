"""The mock national axis's HTTP application: authentication, fault injection and the operations of
``national-axis-protocol.md`` §3. See :mod:`mock_axis` for the overview."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.national_axis.protocol import (
    AXIS_TZ,
    HEADER_PREFIX,
    AuthFailure,
    SignedRequest,
    envelope,
    verify_request,
)
from bus.errors import InputError
from bus.organ_id import OrganId, OrganLevel
from mock_axis.config import MockAxisConfig, MockFaults
from mock_axis.freshness import RequestGuard
from mock_axis.listing import read_received_filter
from mock_axis.sending import Refusal, plan_send
from mock_axis.store import AxisItem, MockAxisStore, NewItem

__all__ = ["MockAxis", "create_mock_app"]

log = structlog.get_logger("bus.mock_axis")

TRANSPORT_STATUSES = {"processing": "Đang xử lý", "done": "Đã nhận", "fail": "Xử lý lỗi"}


def _json(payload: dict[str, Any], status: int = 200, *, ascii_only: bool = False) -> Response:
    text = json.dumps(payload, ensure_ascii=ascii_only, separators=(",", ":"))
    charset = "us-ascii" if ascii_only else "utf-8"
    return Response(text.encode(charset), status, media_type=f"application/json; charset={charset}")


# downloadEdoc's refusal travels in these headers: its body must stay empty (see _refused_download).
ERROR_CODE_HEADER = HEADER_PREFIX + "ErrorCode"
ERROR_DESC_HEADER = HEADER_PREFIX + "ErrorDesc"


def _refused_download(refusal: Refusal) -> Response:
    """A refused ``downloadEdoc`` (the only GET): no body, the ErrorCode as the HTTP status, and the
    envelope's ErrorCode and ErrorDesc as headers.

    The SDK saves whatever body a download answers as ``<docId>.edxml``, whatever the HTTP status,
    and reports SUCCESS; only an empty body makes it report FAIL/100 (protocol notes §6). A JSON
    refusal would be saved as the document. Header values are ASCII: ErrorDesc's other characters
    are JSON escapes (``\\u1ed9``), as in sendEdoc's replies."""
    http = refusal.http if refusal.http != 200 else int(refusal.code)
    reason = json.dumps(refusal.description, ensure_ascii=True)[1:-1]
    return Response(b"", http, headers={ERROR_CODE_HEADER: refusal.code, ERROR_DESC_HEADER: reason})


_SECURITY_HEADERS = {(HEADER_PREFIX + name).lower() for name in ("sign-header", "hash-header")}


def _raw_headers(scope: Mapping[str, Any]) -> dict[str, bytes]:
    """Header values as the bytes that arrived (sendEdoc's sign-header is UTF-8; decoding it as
    latin-1 would break the HMAC over non-ASCII values). A repeated security header is ambiguous."""
    headers: dict[str, bytes] = {}
    for name, value in scope["headers"]:
        key = bytes(name).decode("ascii", "replace").lower()  # names are ASCII tokens
        if key in headers and key in _SECURITY_HEADERS:
            raise AuthFailure(f"header {key} is sent more than once")
        headers[key] = bytes(value)
    return headers


def _axis_time(moment: dt.datetime) -> str:
    # The real axis's time format is unknown [?]: ISO 8601 in Vietnam's local time, to the millisecond.
    return moment.astimezone(AXIS_TZ).isoformat(timespec="milliseconds")


Handler = Callable[[SignedRequest, bytes], Awaitable[dict[str, Any] | Response]]


class MockAxis:
    """The operations; one instance per running mock."""

    def __init__(self, config: MockAxisConfig, store: MockAxisStore, faults: MockFaults) -> None:
        self.config, self.store, self.faults = config, store, faults
        self.guard = RequestGuard()  # freshness_window_s, nonce_memory
        self._operations: dict[tuple[str, str], Handler] = {
            ("POST", "sendEdoc"): self.send_edoc,
            ("POST", "getReceivedEdocList"): self.received_list,
            ("POST", "getSentEdocList"): self.sent_list,
            ("POST", "getEdoc"): self.get_edoc,
            ("GET", "downloadEdoc"): self.download_edoc,
            ("POST", "updateStatus"): self.update_status,
            ("POST", "countReceiveEdoc"): self.count_edoc,
            ("POST", "countReceiveStatus"): self.count_status,
            ("POST", "getAgenciesList"): self.agencies,
            ("POST", "getAgenciesListQD20"): self.agencies_qd20,
            ("POST", "getSynchronizeUnit"): self.synchronize_unit,
            ("POST", "registerAgency"): self.register_agency,
            ("POST", "deleteAgency"): self.delete_agency,
        }

    async def dispatch(self, request: Request) -> Response:
        operation = request.path_params["operation"]
        ascii_only = operation == "sendEdoc"
        system = "-"
        try:
            # Reading the body first also answers `Expect: 100-continue` (uvicorn sends 100 Continue
            # when the app asks for the body), so the SDK does not stall 3 s, even on a fault.
            body = await self._body(request)
            if self.faults.slow_s:
                await asyncio.sleep(self.faults.slow_s)
            if self.faults.down:
                raise Refusal("503", "the axis is down (injected fault: down)", 503)
            if self.faults.take("fail_next"):
                raise Refusal("500", "internal error (injected fault: fail_next)", 500)
            handler = self._operations.get((request.method, operation))
            if handler is None:
                raise Refusal("404", f"no operation {request.method} /{operation} on this axis", 404)
            try:
                headers = _raw_headers(request.scope)
                signed = verify_request(headers, self.config.secret_of)
                system = signed.system_id  # authenticated: a stale or replayed request names it in the log
                self.guard.check(signed, headers[(HEADER_PREFIX + "hash-header").lower()], self.faults)
            except AuthFailure as exc:
                raise Refusal("401", f"authentication failed: {exc}", 401) from exc
            result = await handler(signed, body)
        except Refusal as refusal:
            log.info("mock_axis.refused", operation=operation, system=system, code=refusal.code)
            if request.method == "GET":
                return _refused_download(refusal)
            extra = {"DocId": ""} if ascii_only else {}
            failure = envelope(ok=False, code=refusal.code, description=refusal.description, **extra)
            return _json(failure, refusal.http, ascii_only=ascii_only)
        log.info("mock_axis.answered", operation=operation, system=system)
        return result if isinstance(result, Response) else _json(result, ascii_only=ascii_only)

    async def _body(self, request: Request) -> bytes:
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.config.max_body_bytes:
                    raise Refusal("413", f"body larger than {self.config.max_body_bytes} bytes", 413)
                chunks.append(chunk)
        except ClientDisconnect as exc:  # nobody is left to read the answer; keep the log quiet
            raise Refusal("400", "the client went away before sending the whole body", 400) from exc
        return b"".join(chunks)

    # -- sendEdoc -------------------------------------------------------------------------------------

    async def send_edoc(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        system = self.config.system(signed.system_id)
        if system is None:  # cannot happen: verify_request found its secret
            raise Refusal("401", f"unknown system {signed.system_id}", 401)
        plan = plan_send(self.config, system, signed.params, body)
        if self.faults.take("accept_then_lose"):
            return envelope(DocId=str(uuid.uuid4()))
        sent_id = str(uuid.uuid4())
        await self.store.add_items(
            [
                NewItem(
                    doc_id=sent_id if index == 0 else str(uuid.uuid4()),
                    sent_id=sent_id,
                    from_system=system.system_id,
                    from_code=str(plan.sender),
                    to_code=code,
                    to_system=target.system_id,
                    message_type=plan.message_type,
                    service_type=signed.params.get("servicetype") or "eDoc",
                    body=plan.body,
                    title=plan.routing.title,
                    notation=plan.routing.notation,
                )
                for index, (code, target) in enumerate(plan.recipients.items())
            ]
        )
        log.info("mock_axis.sent", doc_id=sent_id, sender=str(plan.sender), recipients=list(plan.recipients))
        return envelope(DocId=sent_id)

    # -- receiving ------------------------------------------------------------------------------------

    async def received_list(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        p = signed.params
        items = await self.store.received(
            signed.system_id,
            message_type=p.get("messagetype") or None,
            service_type=p.get("servicetype"),
            wanted=read_received_filter(p),  # fromDate, toDate, status, pageSize, pageIndex
            newest_first=self.faults.reorder,  # before paging: a page of the list as the axis orders it
        )
        data = [_received_entry(i) for i in items]
        if self.faults.duplicate_delivery:
            data = [entry for entry in data for entry in (entry, dict(entry))]
        return envelope(data=data)

    async def _own_item(self, signed: SignedRequest) -> AxisItem:
        doc_id = signed.params.get("docId", "")
        if not doc_id:
            raise Refusal("400", "docId is missing")
        item = await self.store.item_for(signed.system_id, doc_id)
        if item is None:
            raise Refusal("404", f"no document {doc_id} addressed to system {signed.system_id}")
        return item

    async def get_edoc(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        item = await self._own_item(signed)
        return envelope(data=base64.b64encode(item.body or b"").decode("ascii"))

    async def download_edoc(self, signed: SignedRequest, body: bytes) -> Response:
        item = await self._own_item(signed)
        return Response(item.body, media_type="application/octet-stream")

    async def update_status(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        status = signed.params.get("status", "")
        if status not in TRANSPORT_STATUSES:
            raise Refusal("400", f"status must be processing, done or fail, not {status!r}")
        doc_id = (await self._own_item(signed)).doc_id
        redeliver = self.faults.duplicate_delivery
        await self.store.set_status(
            signed.system_id, doc_id, status, TRANSPORT_STATUSES[status], redeliver_once=redeliver
        )
        return envelope()

    async def count_edoc(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        service = signed.params.get("servicetype")
        return envelope(count=await self.store.count_received(signed.system_id, "edoc", service))

    async def count_status(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        service = signed.params.get("servicetype")
        return envelope(count=await self.store.count_received(signed.system_id, "status", service))

    async def sent_list(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        p = signed.params
        items = await self.store.sent(
            signed.system_id,
            message_type=p.get("messagetype"),
            service_type=p.get("servicetype"),
            doc_id=p.get("docId"),
        )
        return envelope(data=[_sent_entry(i) for i in items])

    # -- agencies -------------------------------------------------------------------------------------

    async def agencies(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        fields = ("id", "pid", "code", "name", "mail")
        rows = await self.store.agencies()
        return envelope(data=[{**{f: getattr(a, f) for f in fields}, "oldCode": a.old_code} for a in rows])

    async def agencies_qd20(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        level_text = signed.params.get("level", "")
        if level_text and level_text not in {str(level.value) for level in OrganLevel}:
            raise Refusal("400", f"level must be 1 to 4, not {level_text!r}")
        data = []
        for a in await self.store.agencies():
            if level_text and _level(a.code) != int(level_text):
                continue
            data.append({"id": a.id, "code": a.code, "name": a.name, "mail": a.mail, "code102": a.code})
        return envelope(data=data)

    async def synchronize_unit(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        data = []
        for a in await self.store.agencies(include_deleted=True):
            center = _center(self.config, a.code)
            data.append(
                {
                    **{"id": a.id, "pid": a.pid, "code": a.code, "name": a.name, "mail": a.mail},
                    **{"version": a.version, "centerCode": center, "deleted": a.deleted},
                    **{"modifyDate": _axis_time(a.modified_at), "isAgency": True},
                }
            )
        return envelope(data=data)

    async def register_agency(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        try:
            agency = _AgencyIn.model_validate_json(body or b"{}")
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise Refusal("400", f"registerAgency needs a JSON object with code and name: {reasons}") from exc
        saved = await self.store.register_agency(
            agency.code,
            agency.name,
            parent_code=agency.pcode,
            mail=agency.mail,
            mobile=agency.mobile,
            fax=agency.fax,
        )
        return envelope(id=saved.id)

    async def delete_agency(self, signed: SignedRequest, body: bytes) -> dict[str, Any]:
        code = signed.params.get("AgencyCode", "")
        if not code:
            raise Refusal("400", "AgencyCode is missing")
        if not await self.store.delete_agency(code):
            raise Refusal("404", f"no agency {code} in the directory")
        return envelope()

    # -- the test tool ---------------------------------------------------------------------------------

    async def get_faults(self, request: Request) -> Response:
        return _json(self.faults.model_dump())

    async def set_faults(self, request: Request) -> Response:
        try:
            wanted = MockFaults.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return _json({"error": str(exc)}, 400)
        for name in wanted.model_fields_set:
            setattr(self.faults, name, getattr(wanted, name))
        log.info("mock_axis.faults", **self.faults.model_dump())
        return _json(self.faults.model_dump())

    async def reset_faults(self, request: Request) -> Response:
        await request.body()
        self.faults.reset()
        return _json(self.faults.model_dump())


class _AgencyIn(BaseModel):
    """registerAgency's body as the SDK sends it (``id`` is the caller's and is not kept)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    pcode: str = ""
    mail: str = ""
    mobile: str = ""
    fax: str = ""


def _level(code: str) -> int | None:
    try:
        return OrganId.parse(code).level.value
    except InputError:
        return None


def _center(config: MockAxisConfig, code: str) -> str:
    try:
        system = config.serving(OrganId.parse(code))
    except InputError:
        return ""
    return "" if system is None else system.system_id


def _received_entry(item: AxisItem) -> dict[str, Any]:
    return {
        "docId": item.doc_id,
        "serviceType": item.service_type,
        "messageType": item.message_type,
        "created_time": _axis_time(item.created_at),
        "updated_time": _axis_time(item.updated_at),
        "from": item.from_code,
        "to": item.to_code,
        "status": item.status,
        "status_desc": item.status_desc,
    }


def _sent_entry(item: AxisItem) -> dict[str, Any]:
    return {
        "serviceType": item.service_type,
        "receiverDocId": item.doc_id,
        "toCode": item.to_code,
        "receiveStatus": item.status,
        "receiveStatusDesc": item.status_desc,
        "title": item.title,
        "messageType": item.message_type,
        "notation": item.notation,
        "receivedTime": "" if item.status == "pending" else _axis_time(item.updated_at),
        "sentTime": _axis_time(item.created_at),
        "sendStatus": "done",
        "sendStatusDesc": "Trục đã nhận và chuyển cho nơi nhận",
        "senderDocId": item.sent_id,
        "fromCode": item.from_code,
    }


def create_mock_app(config: MockAxisConfig, store: MockAxisStore, faults: MockFaults) -> Starlette:
    axis = MockAxis(config, store, faults)
    return Starlette(
        routes=[
            Route("/_mock/faults", axis.get_faults, methods=["GET"]),
            Route("/_mock/faults", axis.set_faults, methods=["POST"]),
            Route("/_mock/reset", axis.reset_faults, methods=["POST"]),
            Route("/{operation}", axis.dispatch, methods=["GET", "POST"]),
        ]
    )
