"""What an agency sent: ``GET /v1/sent`` lists its documents with each recipient's state, ``GET
/v1/documents/{bus_id}`` gives one document's timeline to its sender and its recipients only
(:func:`bus.access.may_read`)."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.http.auth import authenticate
from adapters.http.context import Resource
from adapters.http.errors import ApiError, echo
from adapters.http.limits import SENT_PAGE_DEFAULT, SENT_PAGE_MAX
from adapters.http.payloads import sent_json, timeline_json
from adapters.http.reading import bounded_int
from bus.access import may_read
from bus.receipts import receipts_from_records

__all__ = ["Documents"]


class Documents(Resource):
    async def sent(self, request: Request) -> Response:
        agency, _ = await authenticate(self.ctx, request)
        params = request.query_params
        limit = bounded_int(params.get("limit", str(SENT_PAGE_DEFAULT)), "limit", 1, SENT_PAGE_MAX)
        before_text = request.query_params.get("before")
        try:
            # Present but empty is a bad value too, not "no value" (the fuzzer's find).
            before = dt.datetime.fromisoformat(before_text) if before_text is not None else None
        except ValueError:
            raise ApiError(400, "bad-parameter", "before must be an ISO 8601 time with its offset") from None
        if before is not None and before.tzinfo is None:
            raise ApiError(
                400, "bad-parameter", "before must carry its offset (e.g. 2026-11-26T08:00:00+07:00)"
            )
        documents = await self.ctx.store.sent(str(agency), before=before, limit=limit)
        return JSONResponse({"documents": [sent_json(doc, rows) for doc, rows in documents]})

    async def document(self, request: Request) -> Response:
        """Only for the document's sender and recipients. Anyone can compute a bus id (uuid5 of the
        sender, type and DocumentId), so for everyone else a document that exists answers exactly as
        one that does not: the same 404 and body, after the same two queries (issue 10 item 6)."""
        agency, _ = await authenticate(self.ctx, request)
        bus_id = request.path_params["bus_id"]
        doc = await self.ctx.store.document(bus_id)
        rows = await self.ctx.store.deliveries(bus_id)
        mine = self.ctx.topology.agency(agency)
        former = mine.aliases if mine else ()
        if doc is None or not may_read(agency, former, doc.sender, (r.recipient for r in rows)):
            raise ApiError(404, "not-found", f"no document {echo(bus_id)} sent or received by {agency}")
        timeline = await self.ctx.store.timeline(bus_id)
        return JSONResponse({**sent_json(doc, rows), "timeline": timeline_json(timeline)})

    async def receipts(self, request: Request) -> Response:
        """The document's signed receipts, for its sender only (the sender's evidence): the acceptance
        and each recipient's final acknowledgement, made from the audit log and signed now. Anyone else
        gets the 404 of a document that does not exist."""
        agency, _ = await authenticate(self.ctx, request)
        bus_id = request.path_params["bus_id"]
        doc = await self.ctx.store.document(bus_id)
        mine = self.ctx.topology.agency(agency)
        former = mine.aliases if mine else ()
        if doc is None or not may_read(agency, former, doc.sender, ()):
            raise ApiError(404, "not-found", f"no document {echo(bus_id)} sent by {agency}")
        if self.ctx.notary is None:
            raise ApiError(503, "unavailable", "this node signs no receipts (it has no signing key)")
        records = await self.ctx.store.audit_of(bus_id)
        signed = receipts_from_records(self.ctx.notary, [(r.chain, r.seq, r.sha256, r.data) for r in records])
        return JSONResponse({"bus_id": bus_id, "receipts": signed})
