"""The published OpenAPI 3.1 document of the agency API (served at ``/v1/openapi.json``).

Written out rather than generated: the API's contract is what agencies code against. A test checks that
every route of the app is described here and nothing more, and a fuzzer (schemathesis, in
tests/integration/test_api_fuzz.py) sends signed requests built from this document to a real node and
fails on any answer it does not describe: status, content type, body or headers.
"""

from __future__ import annotations

from typing import Any

from adapters.http.limits import (
    INBOX_PAGE_DEFAULT,
    INBOX_PAGE_MAX,
    MAX_ACKS_BODY_BYTES,
    MAX_ID,
    MAX_SMALL_BODY_BYTES,
    SENT_PAGE_DEFAULT,
    SENT_PAGE_MAX,
)
from adapters.http.openapi_schemas import SCHEMAS

__all__ = ["openapi_document"]

_SIGNED: list[dict[str, list[str]]] = [{"busHmac": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("Error"))


def _query_integer(name: str, low: int, high: int, default: int, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default},
    }


_ITEM_ID = {
    "name": "item_id",
    "in": "path",
    "required": True,
    "description": "the inbox item's id (`id` of GET /v1/inbox); anything else is a 404",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
}

# What any signed request may be answered besides its own outcomes.
_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": _DIGITS}}

_SIGNED_ERRORS = {
    "400": _error(
        "bad-parameter (a query parameter out of its documented range), bad-header (Content-Length or "
        "Content-Type malformed)"
    ),
    "401": _error(
        "not authenticated: a signing header missing, malformed, repeated or over its bound; bad "
        "signature; stale timestamp; replay"
    ),
    "413": _error(f"body too large (any body but an envelope's: over {MAX_SMALL_BODY_BYTES} bytes)"),
    "503": {
        **_error("store-unavailable: the database is down; send the same request again later"),
        "headers": _RETRY_AFTER,
    },
}


def _page(key: str, item: dict[str, Any], description: str) -> dict[str, Any]:
    schema = {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": item}}}
    return _json(description, schema)


def _paths() -> dict[str, Any]:
    return {
        "/v1/envelopes": {
            "post": {
                "operationId": "send",
                "summary": "Send an envelope (document or status message) as your agency",
                "requestBody": {
                    "required": True,
                    "description": "an edXML envelope (QCVN 102:2016): schema and business checks apply",
                    "content": {"application/xml": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "202": {
                        **_json("accepted: durable in RabbitMQ for every recipient", _ref("Accepted")),
                        "links": {
                            "document": {
                                "operationId": "document",
                                "parameters": {"bus_id": "$response.body#/bus_id"},
                            }
                        },
                    },
                    **_SIGNED_ERRORS,
                    "400": _error(
                        "invalid: malformed or hostile XML, schema or business checks, signature; "
                        "or a bad Content-Length/Content-Type header"
                    ),
                    "403": _error("From/OrganId or the signer is not your agency"),
                    "409": _error("duplicate of an accepted envelope (same sender, DocumentId, type)"),
                    "413": _error("body over http.max_body_bytes"),
                    "415": _error("not XML"),
                    "503": {
                        **_error(
                            "NOT accepted, retry later: broker-unavailable, revocation-unavailable (a CA's "
                            "CRL is out of date), or outcome-unknown (send the same envelope again)"
                        ),
                        "headers": _RETRY_AFTER,
                    },
                },
            }
        },
        "/v1/inbox": {
            "get": {
                "operationId": "inbox",
                "summary": "List envelopes received by your agency, oldest first",
                "parameters": [
                    {
                        "name": "pending",
                        "in": "query",
                        "description": "true: only those not yet acknowledged done or fail",
                        "schema": {"type": "boolean", "default": True},
                    },
                    _query_integer("after", 0, MAX_ID, 0, "only items with a larger id (paging)"),
                    _query_integer("limit", 1, INBOX_PAGE_MAX, INBOX_PAGE_DEFAULT, "items per page"),
                ],
                "responses": {
                    "200": {
                        **_page("items", _ref("InboxItem"), "inbox page"),
                        "links": {
                            "fetch": {
                                "operationId": "fetch",
                                "parameters": {"item_id": "$response.body#/items/0/id"},
                            },
                            "acknowledge": {
                                "operationId": "acknowledge",
                                "parameters": {"item_id": "$response.body#/items/0/id"},
                            },
                        },
                    },
                    **_SIGNED_ERRORS,
                },
            }
        },
        "/v1/inbox/{item_id}": {
            "get": {
                "operationId": "fetch",
                "summary": "Fetch one envelope (as delivered: with trace headers and signatures)",
                "parameters": [_ITEM_ID],
                "responses": {
                    "200": {
                        "description": "the envelope",
                        "content": {"application/xml": {"schema": {"type": "string"}}},
                        "headers": {
                            name: {"required": True, "description": description, "schema": schema}
                            for name, description, schema in [
                                ("X-Bus-Id", "the bus id", {"type": "string"}),
                                ("X-Bus-Inbox-Id", "this item's id", _DIGITS),
                                ("X-Bus-Sender", "the sender's OrganId", {"type": "string"}),
                                ("X-Bus-Kind", "document or status", {"enum": ["document", "status"]}),
                            ]
                        },
                    },
                    **_SIGNED_ERRORS,
                    "404": _error("not in your inbox (another agency's item looks the same)"),
                },
            }
        },
        "/v1/inbox/{item_id}/ack": {
            "post": {
                "operationId": "acknowledge",
                "summary": "Acknowledge an envelope: processing, done or fail (with a reason)",
                "parameters": [_ITEM_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Acknowledgement")}},
                },
                "responses": {
                    "200": _json("acknowledged", _ref("InboxItem")),
                    **_SIGNED_ERRORS,
                    "400": _error(
                        "bad-acknowledgement (not the documented object, a 'fail' without a reason, a "
                        "reason too long), or a bad Content-Length/Content-Type header"
                    ),
                    "404": _error("not in your inbox (another agency's item looks the same)"),
                    "409": _error("already-final: acknowledged done or fail before; it cannot reopen"),
                },
            }
        },
        "/v1/acks": {
            "post": {
                "operationId": "acknowledgeMany",
                "summary": "Acknowledge several envelopes of your inbox at once (one request, one commit)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Acknowledgements")}},
                },
                "responses": {
                    "200": _json(
                        "each acknowledgement's own answer (200, 404 or 409), in order",
                        _ref("AcknowledgementResults"),
                    ),
                    **_SIGNED_ERRORS,
                    "400": _error(
                        "bad-acknowledgement (not the documented object, a 'fail' without a reason, a "
                        "reason too long): nothing is acknowledged; or a bad Content-Length/Content-Type "
                        "header"
                    ),
                    "413": _error(f"body too large: over {MAX_ACKS_BODY_BYTES} bytes"),
                },
            }
        },
        "/v1/sent": {
            "get": {
                "operationId": "sent",
                "summary": "Documents your agency sent, newest first, with each recipient's state",
                "parameters": [
                    _query_integer("limit", 1, SENT_PAGE_MAX, SENT_PAGE_DEFAULT, "documents per page"),
                    {
                        "name": "before",
                        "in": "query",
                        "description": "only documents accepted before this time (with its offset)",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                ],
                "responses": {
                    "200": {
                        **_page("documents", _ref("Sent"), "sent documents"),
                        "links": {
                            "document": {
                                "operationId": "document",
                                "parameters": {"bus_id": "$response.body#/documents/0/bus_id"},
                            }
                        },
                    },
                    **_SIGNED_ERRORS,
                },
            }
        },
        "/v1/documents/{bus_id}": {
            "get": {
                "operationId": "document",
                "summary": "One document: per-recipient state and timeline (its sender or recipients)",
                "parameters": [
                    {"name": "bus_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("the document", _ref("Document")),
                    **_SIGNED_ERRORS,
                    "404": _error(
                        "no such document, or one you neither sent nor received: the two answers are "
                        "the same, since anyone can compute a bus id"
                    ),
                },
            }
        },
        "/v1/documents/{bus_id}/receipts": {
            "get": {
                "operationId": "receipts",
                "summary": "A document's receipts signed by the bus (its sender only): the acceptance and "
                "each recipient's final acknowledgement",
                "parameters": [
                    {"name": "bus_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("the receipts", _ref("Receipts")),
                    **_SIGNED_ERRORS,
                    "404": _error("no such document, or one you did not send"),
                    "503": _error("this node has no signing key"),
                },
            }
        },
        "/v1/agencies": {
            "get": {
                "operationId": "agencies",
                "summary": "Agencies of this province's axis (codes, names, levels, former codes)",
                "responses": {"200": _json("the agencies", _ref("Agencies")), **_SIGNED_ERRORS},
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is alive",
                "security": [],
                "responses": {
                    "200": _json(
                        "ok",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Ready for traffic: broker connected, database answering (load balancers)",
                "description": (
                    "Not signed; reachable from the load balancer and monitoring only. Each check has "
                    "a 2 s limit. The national axis, when configured, reports 'degraded' while its "
                    "circuit is open and the node stays ready: local exchange goes on."
                ),
                "security": [],
                "responses": {
                    "200": _json("ready", _ref("Readiness")),
                    "503": _json("not ready: see the failed checks", _ref("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "description": (
                    "Not signed; for the data centre's Prometheus: firewall it from agencies. "
                    "Metric names and labels: adapters/http/metrics.py."
                ),
                "security": [],
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Trục liên thông văn bản: agency API",
            "version": "1",
            "description": (
                "Push edXML envelopes (documents and status messages) and pull your inbox. Every "
                "request is signed with your agency's shared secret: see docs/http-api.md for the "
                "canonical string and a worked example. Times are UTC (ISO 8601). Any request may "
                "also be answered 431 (request line and headers, or a chunked body's trailer, over "
                "http.max_header_bytes or with more than http.max_headers fields; the connection is "
                "then closed) and any path 405 "
                "with an Allow header for a method it does not have."
            ),
        },
        "components": {
            "securitySchemes": {
                "busHmac": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": (
                        "BUS-HMAC-SHA256 Signature=<hex HMAC-SHA256 of the canonical request>, with "
                        "X-Bus-Agency, X-Bus-Timestamp (Unix seconds), X-Bus-Nonce and "
                        "X-Bus-Content-SHA256 headers"
                    ),
                }
            },
            "schemas": SCHEMAS,
        },
        "security": _SIGNED,
        "paths": _paths(),
    }
