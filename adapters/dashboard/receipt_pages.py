"""A document's signed receipts (issue 15 item 4) on its page, and each as a JSON file to download.

The receipts are the ones the sender gets from ``GET /v1/documents/{bus_id}/receipts``: made from the
document's audit records and signed by the node's notary when asked for (a receipt's index is its place
in that list, which only grows). Operators are trusted staff: they may see any document's receipts. A
downloaded file is checked with ``bus receipt verify FILE --ca CA.pem``, without the bus.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.dashboard.context import Dashboard, Form, guarded
from adapters.dashboard.sessions import Session
from bus.audit import parse_iso
from bus.jws import unb64url
from bus.receipts import ACCEPTED, receipts_from_records

__all__ = ["ReceiptView", "receipts_of", "routes"]

_UNSAFE = re.compile(r"[^0-9A-Za-z._-]")
_LABELS = {"accepted": "Tiếp nhận", "done": "Đã nhận", "fail": "Từ chối xử lý"}


@dataclass(frozen=True, slots=True)
class ReceiptView:
    """One receipt as the document page lists it: what the signed payload says, and its place."""

    index: int
    kind: str  # "accepted", "done" or "fail"
    recipients: tuple[str, ...]  # the acceptance's recipients, or the one that acknowledged
    at: dt.datetime
    sha256: str | None
    reason: str | None
    audit: str | None  # "chain #seq" of the audit record it was made from

    @property
    def label(self) -> str:
        return _LABELS.get(self.kind, self.kind)

    @classmethod
    def of(cls, index: int, receipt: dict[str, str]) -> ReceiptView:
        # Signed a moment ago by this node: its payload is read, not verified again.
        value: dict[str, Any] = json.loads(unb64url(receipt["payload"], "the payload"))
        accepted = value["type"] == ACCEPTED
        audit = value.get("audit")
        return cls(
            index=index,
            kind="accepted" if accepted else str(value.get("state")),
            recipients=tuple(value.get("recipients", [])) if accepted else (str(value.get("recipient")),),
            at=parse_iso(value["at"]),
            sha256=value.get("sha256"),
            reason=value.get("reason"),
            audit=f"{audit['chain']} #{audit['seq']}" if isinstance(audit, dict) else None,
        )


async def receipts_of(dash: Dashboard, bus_id: str) -> list[dict[str, str]] | None:
    """The document's receipts, signed now; None when the node signs none (it has no notary)."""
    if dash.notary is None:
        return None
    records = await dash.store.audit_of(bus_id)
    return receipts_from_records(dash.notary, [(r.chain, r.seq, r.sha256, r.data) for r in records])


async def _download(
    dash: Dashboard, request: Request, session: Session, bus_id: str, index: int | None
) -> Response:
    # As the document page: a bus id is short and has no NUL (which PostgreSQL refuses in text).
    known = len(bus_id) <= 64 and "\x00" not in bus_id and await dash.store.document(bus_id) is not None
    receipts = await receipts_of(dash, bus_id) if known else None
    if receipts is None or (index is not None and not 0 <= index < len(receipts)):
        message = (
            "Nút trục này không ký biên nhận (không có khóa ký)."
            if known and dash.notary is None
            else f"Không có biên nhận này của văn bản {bus_id[:64].replace(chr(0), '')}."
        )
        return dash.render(
            request, "error.html", session, status=404, title="Không tìm thấy biên nhận", message=message
        )
    stem = "bien-nhan-" + _UNSAFE.sub("_", bus_id)  # a bus id is a UUID; a header takes no quote
    if index is None:
        body: Any = {"bus_id": bus_id, "receipts": receipts}
        name = f"{stem}.json"
    else:
        body, name = receipts[index], f"{stem}-{index}.json"
    return Response(
        json.dumps(body, ensure_ascii=False, indent=2) + "\n",
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def all_receipts(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    return await _download(dash, request, session, request.path_params["bus_id"], None)


async def one_receipt(dash: Dashboard, request: Request, session: Session, form: Form) -> Response:
    index: int = request.path_params["index"]
    return await _download(dash, request, session, request.path_params["bus_id"], index)


def routes(dash: Dashboard) -> list[Route]:
    return [
        Route(
            "/documents/{bus_id}/receipts.json",
            guarded(dash, all_receipts),
            methods=["GET"],
            name="document_receipts",
        ),
        Route(
            "/documents/{bus_id}/receipts/{index:int}.json",
            guarded(dash, one_receipt),
            methods=["GET"],
            name="document_receipt",
        ),
    ]
