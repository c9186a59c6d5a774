"""The agency HTTP API (ASGI, Starlette), modelled on the national axis's operations: the routes, each
to its resource's module.

Every ``/v1`` route but the OpenAPI document is signed per agency (:mod:`adapters.http.auth`). An agency
sends only as itself (:mod:`adapters.http.envelopes`), reads only its own inbox
(:mod:`adapters.http.inbox`) and what it sent or received (:mod:`adapters.http.documents`). Errors
are JSON, their status and code by type (:mod:`adapters.http.errors`). "202 Accepted" is answered only
after RabbitMQ confirmed every delivery of the envelope.

Every header and parameter the API reads is bounded and parsed whole before use (issue 10 item 3): a
bad one is a 401 (signing headers) or a 400, never an exception. A document that is not yours looks
exactly like one that does not exist (404, issue 10 item 6): bus ids can be computed by anyone.

Outside ``/v1``, unsigned, for the data centre: ``/healthz``, ``/readyz`` and ``/metrics``
(:mod:`adapters.http.meta`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from adapters.http.acks import Acknowledgements
from adapters.http.agencies import Agencies
from adapters.http.context import ApiContext
from adapters.http.documents import Documents
from adapters.http.envelopes import Envelopes
from adapters.http.errors import guarded, http_error
from adapters.http.inbox import Inbox
from adapters.http.meta import Meta

__all__ = ["ApiContext", "create_app"]


def create_app(ctx: ApiContext) -> Starlette:
    envelopes, inbox, documents = Envelopes(ctx), Inbox(ctx), Documents(ctx)
    agencies, meta, acks = Agencies(ctx), Meta(ctx), Acknowledgements(ctx)
    routes = [
        Route("/v1/envelopes", guarded(envelopes.send), methods=["POST"]),
        Route("/v1/inbox", guarded(inbox.inbox), methods=["GET"]),
        Route("/v1/inbox/{item_id}", guarded(inbox.fetch), methods=["GET"]),
        Route("/v1/inbox/{item_id}/ack", guarded(inbox.acknowledge), methods=["POST"]),
        Route("/v1/acks", guarded(acks.acknowledge_many), methods=["POST"]),
        Route("/v1/sent", guarded(documents.sent), methods=["GET"]),
        Route("/v1/documents/{bus_id}", guarded(documents.document), methods=["GET"]),
        Route("/v1/documents/{bus_id}/receipts", guarded(documents.receipts), methods=["GET"]),
        Route("/v1/agencies", guarded(agencies.agencies), methods=["GET"]),
        Route("/v1/openapi.json", meta.openapi, methods=["GET"]),
        Route("/healthz", meta.healthz, methods=["GET"]),
        Route("/readyz", meta.readyz, methods=["GET"]),
        Route("/metrics", meta.metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.ctx = ctx
    return app
