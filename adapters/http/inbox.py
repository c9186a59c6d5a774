"""An agency's inbox: ``GET /v1/inbox`` lists it, ``GET /v1/inbox/{item_id}`` fetches one envelope,
``POST /v1/inbox/{item_id}/ack`` acknowledges it (the rules: :mod:`bus.access`). Another agency's item
answers exactly as a missing one (404). An envelope is streamed from the body store, a chunk at a time
(issue 12): a 100 MB one is never whole in memory."""

from __future__ import annotations

import datetime as dt

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from adapters.http.auth import authenticate
from adapters.http.context import Resource
from adapters.http.errors import ApiError, echo
from adapters.http.limits import INBOX_PAGE_DEFAULT, INBOX_PAGE_MAX, MAX_ID, MAX_REASON_CHARS
from adapters.http.payloads import item_json
from adapters.http.reading import bounded_int, json_object
from bus.access import ACKNOWLEDGEMENT_FORM, acknowledgement, confirm_acknowledged, is_first_fetch
from bus.errors import BadAcknowledgementError

__all__ = ["Inbox"]

log = structlog.get_logger("bus.api")


class Inbox(Resource):
    async def inbox(self, request: Request) -> Response:
        agency, _ = await authenticate(self.ctx, request)
        params = request.query_params
        after = bounded_int(params.get("after", "0"), "after", 0, MAX_ID)
        limit = bounded_int(params.get("limit", str(INBOX_PAGE_DEFAULT)), "limit", 1, INBOX_PAGE_MAX)
        pending_text = params.get("pending", "true")
        if pending_text not in ("true", "false"):
            raise ApiError(400, "bad-parameter", "pending must be true or false")
        pending = pending_text == "true"
        items = await self.ctx.store.inbox(str(agency), pending_only=pending, after=after, limit=limit)
        return JSONResponse({"items": [item_json(i) for i in items]})

    def _item_id(self, request: Request) -> int:
        raw = request.path_params["item_id"]
        # Length first: int() of more than 4,300 digits raises ValueError.
        if not (len(raw) <= len(str(MAX_ID)) and raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
            raise ApiError(404, "not-found", f"no envelope {echo(raw)}")
        return int(raw)

    async def fetch(self, request: Request) -> Response:
        agency, _ = await authenticate(self.ctx, request)
        item_id = self._item_id(request)
        now = dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)
        item = await self.ctx.store.fetch(str(agency), item_id, now)
        if item is None or (item.body is None and item.body_sha256 is None):
            raise ApiError(404, "not-found", f"no envelope {item_id} in the inbox of {agency}")
        # An entry written before the body store keeps its envelope; any other is streamed from the
        # body store a chunk at a time, with its length and digest said up front.
        body = item.body if item.body is not None else await self._stored(item.id, item.body_sha256 or "")
        first = is_first_fetch(item.fetched_at, now)  # the inbox wait ends here
        if first:
            self.ctx.metrics.first_fetch(item.received_at, now)
        log.info(
            "inbox.fetched",
            bus_id=item.bus_id,
            document_id=item.document_id,
            sender=item.sender,
            recipient=item.addressed_to,
            agency=str(agency),
            first=first,
        )
        headers = {
            "X-Bus-Id": item.bus_id,
            "X-Bus-Inbox-Id": str(item.id),
            "X-Bus-Sender": item.sender,
            "X-Bus-Kind": item.kind,
        }
        if isinstance(body, bytes):
            return Response(body, 200, media_type="application/xml; charset=utf-8", headers=headers)
        size, sha256, whole = body
        if whole is not None:  # one chunk, read with its size: sent as it is
            headers["X-Bus-Body-SHA256"] = sha256
            return Response(whole, 200, media_type="application/xml; charset=utf-8", headers=headers)
        headers |= {"Content-Length": str(size), "X-Bus-Body-SHA256": sha256}
        return StreamingResponse(
            self.ctx.store.body_chunks(sha256),
            200,
            media_type="application/xml; charset=utf-8",
            headers=headers,
        )

    async def _stored(self, item_id: int, sha256: str) -> tuple[int, str, bytes | None]:
        """The size and digest of an entry's envelope in the body store, with the envelope itself when it
        is one chunk; 404 when it is gone (collected after the retention period that follows the
        recipient's acknowledgement)."""
        head = await self.ctx.store.body_head(sha256)
        if head is None:
            raise ApiError(
                404,
                "not-found",
                f"envelope {item_id} is no longer kept: its body was deleted after the retention "
                "period that follows its acknowledgement (store.body_retention_days)",
            )
        return head[0], sha256, head[1]

    async def acknowledge(self, request: Request) -> Response:
        agency, body = await authenticate(self.ctx, request)
        item_id = self._item_id(request)
        try:
            payload = json_object(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
            raise BadAcknowledgementError(ACKNOWLEDGEMENT_FORM) from None
        ack = acknowledgement(payload.get("state"), payload.get("reason"), max_reason_chars=MAX_REASON_CHARS)
        now = dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)
        item = await self.ctx.store.acknowledge(str(agency), item_id, ack.state, now, ack.reason)
        if item is None:
            raise ApiError(404, "not-found", f"no envelope {item_id} in the inbox of {agency}")
        confirm_acknowledged(item_id, ack, item.ack_state)
        log.info(
            "inbox.acknowledged",
            bus_id=item.bus_id,
            document_id=item.document_id,
            sender=item.sender,
            recipient=item.addressed_to,
            agency=str(agency),
            state=ack.state.value,
        )
        return JSONResponse(item_json(item))
