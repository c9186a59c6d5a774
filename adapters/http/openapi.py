"""The published OpenAPI 3.1 document of the agency API (served at ``/v1/openapi.json``).

Written out rather than generated: the API's contract is what agencies code against, and a test
checks that every route of the app is described here and nothing more.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_SIGNED: list[dict[str, list[str]]] = [{"busHmac": []}]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _path_param(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


_AUTH_ERRORS = {"401": _error("not authenticated: missing or bad signature, stale timestamp, replay")}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Trục liên thông văn bản: agency API",
            "version": "1",
            "description": (
                "Push edXML envelopes (documents and status messages) and pull your inbox. Every "
                "request is signed with your agency's shared secret: see docs/http-api.md for the "
                "canonical string and a worked example. Times are UTC (ISO 8601)."
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "examples": ["invalid-envelope", "duplicate"]},
                                "message": {"type": "string"},
                                "bus_id": {"type": "string", "description": "409: the earlier acceptance"},
                                "problems": {
                                    "type": "array",
                                    "description": "400 invalid-envelope: every problem found",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "code": {"type": "string"},
                                            "path": {"type": "string"},
                                            "message": {"type": "string"},
                                            "line": {"type": ["integer", "null"]},
                                        },
                                    },
                                },
                            },
                        }
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["bus_id", "document_id", "recipients"],
                    "properties": {
                        "bus_id": {"type": "string", "format": "uuid"},
                        "document_id": {"type": "string"},
                        "recipients": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "organ_id": {"type": "string"},
                                    "route": {"enum": ["local", "outbound"]},
                                },
                            },
                        },
                    },
                },
                "InboxItem": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "bus_id": {"type": "string"},
                        "sender": {"type": "string"},
                        "kind": {"enum": ["document", "status"]},
                        "document_id": {"type": "string"},
                        "addressed_to": {"type": "string"},
                        "received_at": {"type": "string", "format": "date-time"},
                        "fetched_at": {"type": ["string", "null"], "format": "date-time"},
                        "ack_state": {"enum": [None, "processing", "done", "fail"]},
                        "acked_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "Readiness": {
                    "type": "object",
                    "required": ["ready", "checks"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "checks": {
                            "type": "object",
                            "description": "database, broker, national_axis, node (when stopping)",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"enum": ["ok", "degraded", "failed"]},
                                    "detail": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Document": {
                    "type": "object",
                    "properties": {
                        "bus_id": {"type": "string"},
                        "kind": {"enum": ["document", "status"]},
                        "sender": {"type": "string"},
                        "document_id": {"type": "string"},
                        "business_type": {"type": "integer"},
                        "code": {"type": ["string", "null"]},
                        "subject": {"type": ["string", "null"]},
                        "accepted_at": {"type": "string", "format": "date-time"},
                        "recipients": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "organ_id": {"type": "string"},
                                    "route": {"type": "string"},
                                    "state": {"type": "string"},
                                    "label": {"type": "string", "description": "Vietnamese label"},
                                    "business_status": {"type": ["string", "null"]},
                                    "updated_at": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                        "timeline": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
        "security": _SIGNED,
        "paths": {
            "/v1/envelopes": {
                "post": {
                    "summary": "Send an envelope (document or status message) as your agency",
                    "requestBody": {
                        "required": True,
                        "content": {"application/xml": {"schema": {"type": "string"}}},
                    },
                    "responses": {
                        "202": _json(
                            "accepted: durable in RabbitMQ for every recipient",
                            "#/components/schemas/Accepted",
                        ),
                        "400": _error(
                            "invalid: malformed or hostile XML, schema or business checks, signature"
                        ),
                        **_AUTH_ERRORS,
                        "403": _error("From/OrganId or the signer is not your agency"),
                        "409": _error("duplicate of an accepted envelope (same sender, DocumentId, type)"),
                        "413": _error("body too large"),
                        "415": _error("not XML"),
                        "503": _error("broker unavailable: NOT accepted, retry later (Retry-After)"),
                    },
                }
            },
            "/v1/inbox": {
                "get": {
                    "summary": "List envelopes received by your agency, oldest first",
                    "parameters": [
                        {"name": "pending", "in": "query", "schema": {"type": "boolean", "default": True}},
                        {"name": "after", "in": "query", "schema": {"type": "integer", "default": 0}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}},
                    ],
                    "responses": {
                        "200": {
                            "description": "inbox page",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/InboxItem"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/inbox/{item_id}": {
                "get": {
                    "summary": "Fetch one envelope (as delivered: with trace headers and signatures)",
                    "parameters": [_path_param("item_id", "integer")],
                    "responses": {
                        "200": {"description": "the envelope", "content": {"application/xml": {}}},
                        **_AUTH_ERRORS,
                        "404": _error("not in your inbox"),
                    },
                }
            },
            "/v1/inbox/{item_id}/ack": {
                "post": {
                    "summary": "Acknowledge an envelope: processing, done or fail (with a reason)",
                    "parameters": [_path_param("item_id", "integer")],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["state"],
                                    "properties": {
                                        "state": {"enum": ["processing", "done", "fail"]},
                                        "reason": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json("acknowledged", "#/components/schemas/InboxItem"),
                        "400": _error("bad acknowledgement"),
                        **_AUTH_ERRORS,
                        "404": _error("not in your inbox"),
                    },
                }
            },
            "/v1/sent": {
                "get": {
                    "summary": "Documents your agency sent, newest first, with each recipient's state",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50}},
                        {
                            "name": "before",
                            "in": "query",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "sent documents",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "documents": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Document"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/documents/{bus_id}": {
                "get": {
                    "summary": "One document: per-recipient state and timeline (sender or recipients)",
                    "parameters": [_path_param("bus_id", "string")],
                    "responses": {
                        "200": _json("the document", "#/components/schemas/Document"),
                        **_AUTH_ERRORS,
                        "403": _error("you neither sent nor received it"),
                        "404": _error("unknown bus id"),
                    },
                }
            },
            "/v1/agencies": {
                "get": {
                    "summary": "Agencies of this province's axis (codes, names, levels, former codes)",
                    "responses": {"200": {"description": "the agencies"}, **_AUTH_ERRORS},
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "security": [],
                    "responses": {"200": {"description": "ok"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready for traffic: broker connected, database answering (load balancers)",
                    "description": (
                        "Not signed; reachable from the load balancer and monitoring only. Each check has "
                        "a 2 s limit. The national axis, when configured, reports 'degraded' while its "
                        "circuit is open and the node stays ready: local exchange goes on."
                    ),
                    "security": [],
                    "responses": {
                        "200": _json("ready", "#/components/schemas/Readiness"),
                        "503": _json("not ready: see the failed checks", "#/components/schemas/Readiness"),
                    },
                }
            },
            "/metrics": {
                "get": {
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
        },
    }
