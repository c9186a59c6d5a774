"""The agency HTTP API (ASGI, Starlette), modelled on the national axis's operations.

Every ``/v1`` route but the OpenAPI document is signed per agency (:mod:`bus.auth`). An agency sends
only as itself and reads only its own inbox. Errors are JSON::

    {"error": {"code": "invalid-envelope", "message": "...", "problems": [...]}}

with 400 (every validation problem at once), 401 (not authenticated), 403 (not allowed), 404, 409
(duplicate, with the earlier bus id), 413 (body too large), 415, 503 (broker unavailable: retry).
"202 Accepted" is answered only after RabbitMQ confirmed every delivery of the envelope.

Outside ``/v1``, unsigned, for the data centre: ``/healthz``, ``/readyz`` (:mod:`adapters.http.health`)
and ``/metrics`` (:mod:`adapters.http.metrics`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.http.health import Readiness, database_check
from adapters.http.metrics import CONTENT_TYPE, NodeMetrics
from adapters.http.openapi import openapi_document
from adapters.http.payloads import agencies_json, item_json, sent_json, timeline_json
from adapters.store.store import StatusStore
from bus.auth import AuthError, body_digest, read_headers, verify_request
from bus.delivery import DeliveryState
from bus.errors import (
    BrokerError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    InputError,
    MalformedXmlError,
    SignatureError,
    UnknownDocumentError,
    UnsafeXmlError,
)
from bus.intake import Intake
from bus.organ_id import OrganId
from bus.topology import Topology

__all__ = ["ApiContext", "create_app"]

log = structlog.get_logger("bus.api")

_XML_TYPES = ("application/xml", "text/xml", "application/octet-stream")
_ACKS = {"processing": DeliveryState.PROCESSING, "done": DeliveryState.DONE, "fail": DeliveryState.FAIL}


@dataclass
class ApiContext:
    topology: Topology
    intake: Intake
    store: StatusStore
    secrets: Mapping[str, bytes]  # an agency's current code -> its shared secret
    max_body_bytes: int = 64 * 1024 * 1024
    clock_skew_s: int = 300
    clock: Callable[[], float] = time.time
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    readiness: Readiness = field(default_factory=Readiness)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status, self.code, self.message, self.extra = status, code, message, extra
        super().__init__(message)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status, headers=headers)


def _target(request: Request) -> str:
    """The request target as the client sent it (raw path and query), which the signature covers."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode("utf-8")
    query: bytes = request.scope.get("query_string", b"")
    return (raw_path + (b"?" + query if query else b"")).decode("latin-1")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too-large", f"the body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too-large", f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client-disconnected", "the client went away before the body arrived") from None
    return b"".join(chunks)


class _Api:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def authenticate(self, request: Request) -> tuple[OrganId, bytes]:
        """The authenticated agency and the request body (read within the size limit)."""
        ctx = self.ctx
        try:
            signed = read_headers(request.headers)
            try:
                organ = OrganId.parse(signed.agency)
            except InputError:
                raise AuthError("unknown-agency", f"X-Bus-Agency {signed.agency!r} is no OrganId") from None
            agency = ctx.topology.agency(organ)
            secret = ctx.secrets.get(str(agency.organ_id)) if agency is not None else None
            if agency is None or secret is None or agency.organ_id != organ:
                raise AuthError(
                    "unknown-agency",
                    f"{signed.agency} has no API access on this axis (sign with the agency's current code)",
                )
            now = ctx.clock()
            verify_request(signed, secret, request.method, _target(request), now=now, skew_s=ctx.clock_skew_s)
            body = await _read_body(request, ctx.max_body_bytes)
            if body_digest(body) != signed.content_sha256:
                raise AuthError("body-digest-mismatch", "X-Bus-Content-SHA256 is not the SHA-256 of the body")
            first = await ctx.store.remember_nonce(
                str(organ),
                signed.nonce,
                dt.datetime.fromtimestamp(now, dt.UTC),
                keep=dt.timedelta(seconds=2 * ctx.clock_skew_s),
            )
            if not first:
                raise AuthError("replayed-request", "this request (its nonce) was already received")
        except AuthError as exc:
            raise ApiError(401, exc.code, str(exc)) from None
        request.state.agency = organ  # for the log line of a refusal after this point
        return organ, body

    # -- routes ----------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        """Every refusal is counted by its code and logged (with what is known of the envelope)."""
        try:
            return await self._send(request)
        except ApiError as exc:
            self.ctx.metrics.envelope_rejected(exc.code)
            sender = getattr(request.state, "agency", None)
            log.info(
                "send.rejected",
                code=exc.code,
                status=exc.status,
                # Refused before it was authenticated: only who the request claims to come from.
                **(
                    {"sender": str(sender)}
                    if sender is not None
                    else {"claimed_agency": request.headers.get("x-bus-agency", "")[:64]}
                ),
                **({"bus_id": exc.extra["bus_id"]} if "bus_id" in exc.extra else {}),
                message=exc.message[:500],
            )
            raise
        except Exception:
            self.ctx.metrics.envelope_rejected("internal")
            raise

    async def _send(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/xml").split(";")[0].strip()
        if content_type not in _XML_TYPES:
            raise ApiError(
                415, "unsupported-media-type", f"send the envelope as application/xml, not {content_type}"
            )
        sender, body = await self.authenticate(request)
        started = time.perf_counter()
        try:
            accepted = await self.ctx.intake.accept(body, sender=sender)
        except EnvelopeInvalidError as exc:
            problems = [dataclasses.asdict(p) for p in exc.problems]
            raise ApiError(400, "invalid-envelope", str(exc), problems=problems) from None
        except DuplicateEnvelopeError as exc:
            raise ApiError(409, "duplicate", str(exc), bus_id=exc.bus_id) from None
        except ForgedSenderError as exc:
            raise ApiError(403, "forged-sender", str(exc)) from None
        except UnsafeXmlError as exc:
            status = 413 if "exceeds the limit" in str(exc) else 400
            raise ApiError(status, "too-large" if status == 413 else "unsafe-xml", str(exc)) from None
        except MalformedXmlError as exc:
            raise ApiError(400, "malformed-xml", str(exc)) from None
        except SignatureError as exc:
            raise ApiError(400, "signature-invalid", str(exc)) from None
        except UnknownDocumentError as exc:
            raise ApiError(400, "unknown-document", str(exc)) from None
        except InputError as exc:
            raise ApiError(400, "invalid-input", str(exc)) from None
        except BrokerError as exc:
            log.error("send.broker_unavailable", sender=str(sender), error=str(exc))
            raise ApiError(503, "broker-unavailable", "the envelope was NOT accepted: retry later") from None
        except Exception as exc:  # the store failed, perhaps after some deliveries were published
            log.error("send.store_unavailable", sender=str(sender), error=type(exc).__name__)
            raise ApiError(
                503,
                "outcome-unknown",
                "the envelope was NOT accepted, though some recipients may have it: send the SAME "
                "envelope again (a repeat is absorbed, never delivered twice)",
            ) from None
        self.ctx.metrics.envelope_accepted(accepted.kind, time.perf_counter() - started)
        log.info(
            "send.accepted",
            bus_id=accepted.bus_id,
            document_id=accepted.document_id,
            kind=accepted.kind,
            sender=accepted.sender,
            recipients=[str(d.addressed_to) for d in accepted.destinations],
        )
        return JSONResponse(
            {
                "bus_id": accepted.bus_id,
                "document_id": accepted.document_id,
                "recipients": [
                    {"organ_id": str(d.addressed_to), "route": d.kind.value} for d in accepted.destinations
                ],
            },
            202,
        )

    async def inbox(self, request: Request) -> Response:
        agency, _ = await self.authenticate(request)
        params = request.query_params
        after = _bounded(params.get("after", "0"), "after", 0, _MAX_ID)
        limit = _bounded(params.get("limit", "100"), "limit", 1, 1000)
        pending = params.get("pending", "true").lower() not in ("false", "0", "no")
        items = await self.ctx.store.inbox(str(agency), pending_only=pending, after=after, limit=limit)
        return JSONResponse({"items": [item_json(i) for i in items]})

    def _item_id(self, request: Request) -> int:
        raw = request.path_params["item_id"]
        if not (raw.isascii() and raw.isdigit()) or int(raw) > _MAX_ID:
            raise ApiError(404, "not-found", f"no envelope {raw!r}")
        return int(raw)

    async def fetch(self, request: Request) -> Response:
        agency, _ = await self.authenticate(request)
        item_id = self._item_id(request)
        now = dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)
        item = await self.ctx.store.fetch(str(agency), item_id, now)
        if item is None or item.body is None:
            raise ApiError(404, "not-found", f"no envelope {item_id} in the inbox of {agency}")
        first = item.fetched_at == now  # this request fetched it first: the inbox wait ends here
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
        return Response(
            item.body,
            200,
            media_type="application/xml; charset=utf-8",
            headers={
                "X-Bus-Id": item.bus_id,
                "X-Bus-Inbox-Id": str(item.id),
                "X-Bus-Sender": item.sender,
                "X-Bus-Kind": item.kind,
            },
        )

    async def acknowledge(self, request: Request) -> Response:
        agency, body = await self.authenticate(request)
        item_id = self._item_id(request)
        try:
            payload = _json_object(body)
            state = _ACKS[str(payload.get("state"))]
        except (ValueError, KeyError):
            raise ApiError(
                400, "bad-acknowledgement", 'send {"state": "processing" | "done" | "fail", "reason": "..."}'
            ) from None
        reason = payload.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ApiError(400, "bad-acknowledgement", "reason must be text")
        if state is DeliveryState.FAIL and not reason:
            raise ApiError(400, "bad-acknowledgement", "a 'fail' acknowledgement needs a reason")
        now = dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)
        item = await self.ctx.store.acknowledge(str(agency), item_id, state, now, reason)
        if item is None:
            raise ApiError(404, "not-found", f"no envelope {item_id} in the inbox of {agency}")
        if item.ack_state != state.value:
            raise ApiError(
                409, "already-final", f"envelope {item_id} was already acknowledged as {item.ack_state}"
            )
        log.info(
            "inbox.acknowledged",
            bus_id=item.bus_id,
            document_id=item.document_id,
            sender=item.sender,
            recipient=item.addressed_to,
            agency=str(agency),
            state=state.value,
        )
        return JSONResponse(item_json(item))

    async def sent(self, request: Request) -> Response:
        agency, _ = await self.authenticate(request)
        limit = _bounded(request.query_params.get("limit", "50"), "limit", 1, 500)
        before_text = request.query_params.get("before")
        try:
            before = dt.datetime.fromisoformat(before_text) if before_text else None
        except ValueError:
            raise ApiError(400, "bad-parameter", "before must be an ISO 8601 time with its offset") from None
        if before is not None and before.tzinfo is None:
            raise ApiError(
                400, "bad-parameter", "before must carry its offset (e.g. 2026-11-26T08:00:00+07:00)"
            )
        documents = await self.ctx.store.sent(str(agency), before=before, limit=limit)
        return JSONResponse({"documents": [sent_json(doc, rows) for doc, rows in documents]})

    async def document(self, request: Request) -> Response:
        agency, _ = await self.authenticate(request)
        bus_id = request.path_params["bus_id"]
        doc = await self.ctx.store.document(bus_id)
        if doc is None:
            raise ApiError(404, "not-found", f"no document {bus_id}")
        rows = await self.ctx.store.deliveries(bus_id)
        mine = self.ctx.topology.agency(agency)
        codes = {str(agency), *(str(a) for a in (mine.aliases if mine else ()))}
        if doc.sender != str(agency) and not codes & {r.recipient for r in rows}:
            raise ApiError(403, "forbidden", f"{agency} neither sent nor received document {bus_id}")
        timeline = await self.ctx.store.timeline(bus_id)
        return JSONResponse({**sent_json(doc, rows), "timeline": timeline_json(timeline)})

    async def agencies(self, request: Request) -> Response:
        await self.authenticate(request)
        return JSONResponse(agencies_json(self.ctx.topology))

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ready, checks = await self.ctx.readiness.run({"database": database_check(self.ctx.store.engine)})
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        agencies = [str(a.organ_id) for a in self.ctx.topology.agencies]
        body = await self.ctx.metrics.exposition(self.ctx.store, agencies)
        return Response(body, 200, media_type=CONTENT_TYPE)


_MAX_ID = 2**62


def _bounded(text: str, name: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ApiError(400, "bad-parameter", f"{name} must be an integer from {low} to {high}")
    return int(text)


def _json_object(body: bytes) -> dict[str, Any]:
    value = json.loads(body.decode("utf-8")) if body else {}
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message, **exc.extra)
        except HTTPException:
            raise
        except Exception:
            log.exception("api.internal_error", path=request.url.path, method=request.method)
            return _error(500, "internal", "internal error; the request had no effect unless a 202 was sent")

    return run


def create_app(ctx: ApiContext) -> Starlette:
    api = _Api(ctx)
    routes = [
        Route("/v1/envelopes", _guarded(api.send), methods=["POST"]),
        Route("/v1/inbox", _guarded(api.inbox), methods=["GET"]),
        Route("/v1/inbox/{item_id}", _guarded(api.fetch), methods=["GET"]),
        Route("/v1/inbox/{item_id}/ack", _guarded(api.acknowledge), methods=["POST"]),
        Route("/v1/sent", _guarded(api.sent), methods=["GET"]),
        Route("/v1/documents/{bus_id}", _guarded(api.document), methods=["GET"]),
        Route("/v1/agencies", _guarded(api.agencies), methods=["GET"]),
        Route("/v1/openapi.json", api.openapi, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        code = {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")
        return _error(status, code, f"{request.method} {request.url.path}: {getattr(exc, 'detail', '')}")

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.ctx = ctx
    return app
