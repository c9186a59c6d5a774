"""The agency HTTP API (ASGI, Starlette), modelled on the national axis's operations.

Every ``/v1`` route but the OpenAPI document is signed per agency (:mod:`bus.auth`). An agency sends
only as itself and reads only its own inbox. Errors are JSON::

    {"error": {"code": "invalid-envelope", "message": "...", "problems": [...]}}

with 400 (every validation problem at once), 401 (not authenticated), 403 (not allowed), 404, 405 (with
``Allow``), 409 (duplicate, with the earlier bus id), 413 (body too large), 415, 503 (broker unavailable:
retry). "202 Accepted" is answered only after RabbitMQ confirmed every delivery of the envelope.

Every header and parameter the API reads is bounded and parsed whole before use (issue 10 item 3): a
bad one is a 401 (signing headers) or a 400, never an exception. A document that is not yours looks
exactly like one that does not exist (404, issue 10 item 6): bus ids can be computed by anyone.

Outside ``/v1``, unsigned, for the data centre: ``/healthz``, ``/readyz`` (:mod:`adapters.http.health`)
and ``/metrics`` (:mod:`adapters.http.metrics`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.http.health import Readiness, database_check
from adapters.http.limits import (
    INBOX_PAGE_DEFAULT,
    INBOX_PAGE_MAX,
    MAX_ID,
    MAX_REASON_CHARS,
    MAX_SMALL_BODY_BYTES,
    SENT_PAGE_DEFAULT,
    SENT_PAGE_MAX,
)
from adapters.http.metrics import CONTENT_TYPE, NodeMetrics
from adapters.http.openapi import openapi_document
from adapters.http.payloads import agencies_json, item_json, sent_json, timeline_json
from adapters.http.reading import (
    ApiError,
    bounded_int,
    echo,
    error_response,
    json_object,
    media_type,
    read_body,
    request_target,
)
from adapters.store.store import StatusStore
from bus.access import (
    ACKNOWLEDGEMENT_FORM,
    acknowledgement,
    confirm_acknowledged,
    is_first_fetch,
    may_read,
)
from bus.auth import SIGNING_HEADERS, AuthError, body_digest, read_headers, verify_request
from bus.errors import (
    AlreadyFinalError,
    BadAcknowledgementError,
    BrokerError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    InputError,
    MalformedXmlError,
    RevocationUnknownError,
    SignatureError,
    UnknownDocumentError,
    UnsafeXmlError,
    XmlTooLargeError,
)
from bus.intake import Intake
from bus.organ_id import OrganId
from bus.topology import Topology

__all__ = ["ApiContext", "create_app"]

log = structlog.get_logger("bus.api")

_XML_TYPES = ("application/xml", "text/xml", "application/octet-stream")


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


class _Api:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def authenticate(
        self, request: Request, body_limit: int = MAX_SMALL_BODY_BYTES
    ) -> tuple[OrganId, bytes]:
        """The authenticated agency and the request body (read within *body_limit*)."""
        ctx = self.ctx
        try:
            repeated = [name for name in SIGNING_HEADERS if len(request.headers.getlist(name)) > 1]
            if repeated:
                # Two values of a signed header: which one was signed depends on who reads it.
                raise AuthError("duplicate-header", f"header(s) sent more than once: {', '.join(repeated)}")
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
            target = request_target(request)
            verify_request(signed, secret, request.method, target, now=now, skew_s=ctx.clock_skew_s)
            body = await read_body(request, body_limit)
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
        content_type = media_type(request, "application/xml")
        if content_type not in _XML_TYPES:
            raise ApiError(
                415,
                "unsupported-media-type",
                f"send the envelope as application/xml, not {echo(content_type)}",
            )
        sender, body = await self.authenticate(request, self.ctx.max_body_bytes)
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
        except XmlTooLargeError as exc:
            raise ApiError(413, "too-large", str(exc)) from None
        except UnsafeXmlError as exc:
            raise ApiError(400, "unsafe-xml", str(exc)) from None
        except MalformedXmlError as exc:
            raise ApiError(400, "malformed-xml", str(exc)) from None
        except SignatureError as exc:
            raise ApiError(400, "signature-invalid", str(exc)) from None
        except UnknownDocumentError as exc:
            raise ApiError(400, "unknown-document", str(exc)) from None
        except InputError as exc:
            raise ApiError(400, "invalid-input", str(exc)) from None
        except RevocationUnknownError as exc:
            # Nothing is wrong with the envelope as far as anyone knows: the CA's CRL is out of date.
            log.error("send.revocation_unknown", sender=str(sender), error=str(exc))
            raise ApiError(
                503,
                "revocation-unavailable",
                f"the envelope was NOT accepted: {exc}; send it again later",
            ) from None
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
        agency, _ = await self.authenticate(request)
        item_id = self._item_id(request)
        now = dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)
        item = await self.ctx.store.fetch(str(agency), item_id, now)
        if item is None or item.body is None:
            raise ApiError(404, "not-found", f"no envelope {item_id} in the inbox of {agency}")
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

    async def sent(self, request: Request) -> Response:
        agency, _ = await self.authenticate(request)
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
        agency, _ = await self.authenticate(request)
        bus_id = request.path_params["bus_id"]
        doc = await self.ctx.store.document(bus_id)
        rows = await self.ctx.store.deliveries(bus_id)
        mine = self.ctx.topology.agency(agency)
        former = mine.aliases if mine else ()
        if doc is None or not may_read(agency, former, doc.sender, (r.recipient for r in rows)):
            raise ApiError(404, "not-found", f"no document {echo(bus_id)} sent or received by {agency}")
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


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)
        except BadAcknowledgementError as exc:
            return error_response(400, "bad-acknowledgement", str(exc))
        except AlreadyFinalError as exc:
            return error_response(409, "already-final", str(exc))
        except HTTPException:
            raise
        except Exception:
            log.exception("api.internal_error", path=request.url.path, method=request.method)
            message = "internal error; the request had no effect unless a 202 was sent"
            return error_response(500, "internal", message)

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
        response = error_response(
            status, code, f"{echo(request.method)} {echo(request.url.path)}: {getattr(exc, 'detail', '')}"
        )
        # A 405 names the methods the resource has (RFC 9110 section 15.5.6): Starlette puts them in
        # the exception's Allow header.
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.ctx = ctx
    return app
