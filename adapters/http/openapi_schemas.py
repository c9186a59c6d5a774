"""The JSON schemas of the agency API's bodies (``components.schemas`` of the OpenAPI document).

They describe :mod:`adapters.http.payloads` field for field, with the fields that are always present
marked ``required``: the fuzzer (tests/integration/test_api_fuzz.py) checks every answer against them.
"""

from __future__ import annotations

from typing import Any

from adapters.http.limits import MAX_ACKS, MAX_ID, MAX_REASON_CHARS
from bus.delivery import DeliveryState
from bus.topology import AgencyLevel

__all__ = ["SCHEMAS"]

_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_STATES = [state.value for state in DeliveryState]


def _object(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, **extra}


_ERROR = _object(
    ["error"],
    {
        "error": _object(
            ["code", "message"],
            {
                "code": {"type": "string", "examples": ["invalid-envelope", "duplicate", "bad-parameter"]},
                "message": {"type": "string"},
                "bus_id": {"type": "string", "description": "409 duplicate: the earlier acceptance"},
                "problems": {
                    "type": "array",
                    "description": "400 invalid-envelope: every problem found",
                    "items": _object(
                        ["code", "path", "message"],
                        {
                            "code": {"type": "string"},
                            "path": {"type": "string"},
                            "message": {"type": "string"},
                            "line": {"type": ["integer", "null"]},
                        },
                    ),
                },
            },
        )
    },
)

_JWS = _object(
    ["protected", "payload", "signature"],
    {"protected": {"type": "string"}, "payload": {"type": "string"}, "signature": {"type": "string"}},
    description="a receipt signed by the bus: a flattened JSON Web Signature (RFC 7515) whose payload is "
    "the receipt's JSON and whose header carries the bus's certificate chain (x5c); docs/audit.md",
)

_ACCEPTED = _object(
    ["bus_id", "document_id", "recipients"],
    {
        "receipt": _JWS,
        "bus_id": {"type": "string", "format": "uuid"},
        "document_id": {"type": "string"},
        "recipients": {
            "type": "array",
            "items": _object(
                ["organ_id", "route"],
                {"organ_id": {"type": "string"}, "route": {"enum": ["local", "outbound"]}},
            ),
        },
    },
)

_INBOX_ITEM = _object(
    ["id", "bus_id", "sender", "kind", "document_id", "addressed_to", "received_at"],
    {
        "id": {"type": "integer", "minimum": 1},
        "bus_id": {"type": "string"},
        "sender": {"type": "string"},
        "kind": {"enum": ["document", "status"]},
        "document_id": {"type": "string"},
        "addressed_to": {"type": "string", "description": "the code it was addressed to (maybe former)"},
        "received_at": _TIME,
        "fetched_at": _TIME_OR_NULL,
        "ack_state": {"enum": [None, "processing", "done", "fail"]},
        "acked_at": _TIME_OR_NULL,
    },
)

_RECIPIENT_STATE = _object(
    ["organ_id", "route", "state", "label", "updated_at"],
    {
        "organ_id": {"type": "string"},
        "route": {"type": "string"},
        "state": {"enum": _STATES},
        "label": {"type": "string", "description": "Vietnamese label of the state"},
        "business_status": {**_TEXT_OR_NULL, "description": "the last status code (01-16) it sent back"},
        "updated_at": _TIME,
    },
)

_TIMELINE_EVENT = _object(
    ["recipient", "state", "label", "at"],
    {
        "recipient": {**_TEXT_OR_NULL, "description": "null: the event concerns the whole document"},
        "state": {"enum": _STATES},
        "label": {"type": "string"},
        "at": _TIME,
        "detail": _TEXT_OR_NULL,
    },
)

_SENT = _object(
    ["bus_id", "kind", "sender", "document_id", "business_type", "accepted_at", "recipients"],
    {
        "bus_id": {"type": "string"},
        "kind": {"enum": ["document", "status"]},
        "sender": {"type": "string"},
        "document_id": {"type": "string"},
        "business_type": {"type": "integer"},
        "code": _TEXT_OR_NULL,
        "subject": _TEXT_OR_NULL,
        "accepted_at": _TIME,
        "recipients": {"type": "array", "items": _RECIPIENT_STATE},
    },
)

_DOCUMENT = {
    "allOf": [
        {"$ref": "#/components/schemas/Sent"},
        _object(["timeline"], {"timeline": {"type": "array", "items": _TIMELINE_EVENT}}),
    ]
}

_AGENCIES = _object(
    ["province", "agencies"],
    {
        "province": {"type": "string"},
        "agencies": {
            "type": "array",
            "items": _object(
                ["organ_id", "name", "level", "parent", "aliases"],
                {
                    "organ_id": {"type": "string"},
                    "name": {"type": "string"},
                    "level": {"enum": [level.value for level in AgencyLevel]},
                    "parent": _TEXT_OR_NULL,
                    "aliases": {"type": "array", "items": {"type": "string"}},
                },
            ),
        },
    },
)

_READINESS = _object(
    ["ready", "checks"],
    {
        "ready": {"type": "boolean"},
        "checks": {
            "type": "object",
            "description": "database, broker, national_axis, node (when stopping)",
            "additionalProperties": _object(
                ["status"],
                {"status": {"enum": ["ok", "degraded", "failed"]}, "detail": {"type": "string"}},
            ),
        },
    },
)

# A 'fail' acknowledgement must say why: the reason goes on the sender's timeline.
_ACKNOWLEDGEMENT = {
    **_object(
        ["state"],
        {
            "state": {"enum": ["processing", "done", "fail"]},
            "reason": {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS},
        },
    ),
    "if": {"properties": {"state": {"const": "fail"}}},
    "then": {"required": ["reason"], "properties": {"reason": {"type": "string", "minLength": 1}}},
}

_ACK_ENTRY = {
    **_object(
        ["id", "state"],
        {
            "id": {"type": "integer", "minimum": 0, "maximum": MAX_ID, "description": "the inbox item"},
            "state": {"enum": ["processing", "done", "fail"]},
            "reason": {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS},
        },
        additionalProperties=False,
    ),
    "if": {"properties": {"state": {"const": "fail"}}},
    "then": {"required": ["reason"], "properties": {"reason": {"type": "string", "minLength": 1}}},
}
_ACKNOWLEDGEMENTS = _object(
    ["acks"],
    {
        "acks": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ACKS,
            "description": "applied in order: an envelope named twice gets the answer of each in turn",
            "items": _ACK_ENTRY,
        }
    },
    additionalProperties=False,
)
_ACK_RESULTS = _object(
    ["results"],
    {
        "results": {
            "type": "array",
            "description": "one per acknowledgement, in the order sent",
            "items": _object(
                ["id", "status"],
                {
                    "id": {"type": "integer"},
                    "status": {"enum": [200, 404, 409], "description": "what POST .../ack would answer"},
                    "item": {"$ref": "#/components/schemas/InboxItem"},
                    "error": _ERROR["properties"]["error"],
                },
            ),
        }
    },
)

_RECEIPTS = _object(
    ["bus_id", "receipts"],
    {"bus_id": {"type": "string"}, "receipts": {"type": "array", "items": _JWS}},
)

SCHEMAS: dict[str, Any] = {
    "Receipts": _RECEIPTS,
    "Error": _ERROR,
    "Accepted": _ACCEPTED,
    "InboxItem": _INBOX_ITEM,
    "Acknowledgement": _ACKNOWLEDGEMENT,
    "Acknowledgements": _ACKNOWLEDGEMENTS,
    "AcknowledgementResults": _ACK_RESULTS,
    "Sent": _SENT,
    "Document": _DOCUMENT,
    "Agencies": _AGENCIES,
    "Readiness": _READINESS,
}
