"""``POST /v1/envelopes``: an agency sends an envelope. "202 Accepted" is answered only after RabbitMQ
confirmed every delivery of it (:meth:`bus.intake.Intake.accept`); every refusal is counted by its code
and logged. The envelope is spooled to disk as it arrives (up to ``http.max_body_bytes``) and read from
there: a 100 MB one never is whole in memory (docs/data-path.md)."""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.http.auth import authenticate_envelope
from adapters.http.context import Resource
from adapters.http.errors import ApiError, api_error, echo
from adapters.http.reading import media_type
from bus.errors import BrokerError, RevocationUnknownError, StoreError
from bus.organ_id import OrganId
from bus.receipts import acceptance_receipt

__all__ = ["Envelopes"]

log = structlog.get_logger("bus.api")

_XML_TYPES = ("application/xml", "text/xml", "application/octet-stream")
# What intake could not reach is logged as an error: the operators have something to fix.
_UNAVAILABLE = ((RevocationUnknownError, "send.revocation_unknown"), (BrokerError, "send.broker_unavailable"))


class Envelopes(Resource):
    async def send(self, request: Request) -> Response:
        """Every refusal is counted by its code and logged (with what is known of the envelope)."""
        try:
            return await self._send(request)
        except Exception as exc:
            error = api_error(exc)
            if error is None:
                self.ctx.metrics.envelope_rejected("internal")
                raise
            self.ctx.metrics.envelope_rejected(error.code)
            sender = getattr(request.state, "agency", None)
            log.info(
                "send.rejected",
                code=error.code,
                status=error.status,
                # Refused before it was authenticated: only who the request claims to come from.
                **(
                    {"sender": str(sender)}
                    if sender is not None
                    else {"claimed_agency": request.headers.get("x-bus-agency", "")[:64]}
                ),
                **({"bus_id": error.extra["bus_id"]} if "bus_id" in error.extra else {}),
                message=error.message[:500],
            )
            raise

    async def _send(self, request: Request) -> Response:
        content_type = media_type(request, "application/xml")
        if content_type not in _XML_TYPES:
            raise ApiError(
                415,
                "unsupported-media-type",
                f"send the envelope as application/xml, not {echo(content_type)}",
            )
        sender, received = await authenticate_envelope(self.ctx, request)  # spooled, digest checked
        started = time.perf_counter()
        try:
            with received.file:
                accepted = await self.ctx.intake.accept(received, sender=sender)
        except Exception as exc:
            raise _not_accepted(exc, sender) from None
        self.ctx.metrics.envelope_accepted(accepted.kind, time.perf_counter() - started)
        log.info(
            "send.accepted",
            bus_id=accepted.bus_id,
            document_id=accepted.document_id,
            kind=accepted.kind,
            sender=accepted.sender,
            recipients=[str(d.addressed_to) for d in accepted.destinations],
        )
        answer: dict[str, Any] = {
            "bus_id": accepted.bus_id,
            "document_id": accepted.document_id,
            "recipients": [
                {"organ_id": str(d.addressed_to), "route": d.kind.value} for d in accepted.destinations
            ],
        }
        # Signed evidence of what the bus took (issue 15): `bus receipt verify` checks it.
        receipt = None if self.ctx.notary is None else acceptance_receipt(self.ctx.notary, accepted)
        if receipt is not None:
            answer["receipt"] = receipt
        return JSONResponse(answer, 202)


def _not_accepted(exc: Exception, sender: OrganId) -> ApiError:
    """The answer to an envelope that intake did not accept: the error table's for what it refused
    and for a service it could not reach, 503 ``outcome-unknown`` for any other failure."""
    for kind, event in _UNAVAILABLE:
        if isinstance(exc, kind):
            log.error(event, sender=str(sender), error=str(exc))
    error = None if isinstance(exc, StoreError) else api_error(exc)
    if error is not None:
        return error
    # The store failed, perhaps after some deliveries were published.
    log.error("send.store_unavailable", sender=str(sender), error=type(exc).__name__)
    return ApiError(
        503,
        "outcome-unknown",
        "the envelope was NOT accepted, though some recipients may have it: send the SAME "
        "envelope again (a repeat is absorbed, never delivered twice)",
    )
