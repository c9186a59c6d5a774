"""``POST /v1/acks``: an agency acknowledges up to :data:`~adapters.http.limits.MAX_ACKS` envelopes of
its inbox with one request and one transaction (issue 12: an agency that pulled a batch acknowledges it
as a batch). Each acknowledgement follows the single one's rules (:mod:`bus.access`) and gets the answer
the single one would have had, in ``results``, in the order sent (an envelope named twice gets the
answer of each in turn): 200 with the item, 404 (not in your inbox, another agency's item looks the
same) or 409 (already final). A request that is not the documented form changes nothing (400)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.http.auth import authenticate
from adapters.http.context import Resource
from adapters.http.limits import MAX_ACKS, MAX_ACKS_BODY_BYTES, MAX_ID, MAX_REASON_CHARS
from adapters.http.payloads import item_json
from adapters.http.reading import json_object
from bus.access import Acknowledgement, acknowledgement, confirm_acknowledged
from bus.errors import AlreadyFinalError, BadAcknowledgementError

__all__ = ["Acknowledgements"]

log = structlog.get_logger("bus.api")

BATCH_FORM = (
    f'send {{"acks": [{{"id": 7, "state": "processing" | "done" | "fail", "reason": "..."}}, ...]}}: '
    f"1 to {MAX_ACKS} acknowledgements"
)


def _acks(body: bytes) -> list[tuple[int, Acknowledgement]]:
    try:
        payload = json_object(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise BadAcknowledgementError(BATCH_FORM) from None
    entries = payload.get("acks")
    if set(payload) != {"acks"} or not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ACKS:
        raise BadAcknowledgementError(BATCH_FORM)
    parsed: list[tuple[int, Acknowledgement]] = []
    for position, entry in enumerate(entries):
        item_id = _integer(entry.get("id")) if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not set(entry) <= {"id", "state", "reason"}
            or item_id is None
            or not 0 <= item_id <= MAX_ID
        ):
            raise BadAcknowledgementError(f"acks[{position}]: {BATCH_FORM}")
        try:
            ack = acknowledgement(entry.get("state"), entry.get("reason"), max_reason_chars=MAX_REASON_CHARS)
        except BadAcknowledgementError as exc:
            raise BadAcknowledgementError(f"acks[{position}] (envelope {item_id}): {exc}") from None
        parsed.append((item_id, ack))
    return parsed


def _integer(value: object) -> int | None:
    """A JSON integer (``7``, or ``7.0``, which JSON Schema counts as one too); not a bool."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


class Acknowledgements(Resource):
    async def acknowledge_many(self, request: Request) -> Response:
        agency, body = await authenticate(self.ctx, request, MAX_ACKS_BODY_BYTES)
        acks = _acks(body)
        now = dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)
        items = await self.ctx.store.acknowledge_many(
            str(agency), [(item_id, ack.state, ack.reason) for item_id, ack in acks], now
        )
        results: list[dict[str, Any]] = []
        for (item_id, ack), item in zip(acks, items, strict=True):
            if item is None:
                message = f"no envelope {item_id} in the inbox of {agency}"
                results.append(
                    {"id": item_id, "status": 404, "error": {"code": "not-found", "message": message}}
                )
                continue
            try:
                confirm_acknowledged(item_id, ack, item.ack_state)
            except AlreadyFinalError as exc:
                results.append(
                    {"id": item_id, "status": 409, "error": {"code": "already-final", "message": str(exc)}}
                )
                continue
            log.info(
                "inbox.acknowledged",
                bus_id=item.bus_id,
                document_id=item.document_id,
                sender=item.sender,
                recipient=item.addressed_to,
                agency=str(agency),
                state=ack.state.value,
            )
            results.append({"id": item_id, "status": 200, "item": item_json(item)})
        return JSONResponse({"results": results})
