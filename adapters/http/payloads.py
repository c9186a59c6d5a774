"""The JSON bodies of the agency API (their schemas are in :mod:`adapters.http.openapi`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bus.delivery import AcceptedDocument, DeliveryRow, InboxItem, TimelineEvent
from bus.topology import Topology

__all__ = ["agencies_json", "iso", "item_json", "sent_json", "timeline_json"]


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def item_json(item: InboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "bus_id": item.bus_id,
        "sender": item.sender,
        "kind": item.kind,
        "document_id": item.document_id,
        "addressed_to": item.addressed_to,
        "received_at": iso(item.received_at),
        "fetched_at": iso(item.fetched_at),
        "ack_state": item.ack_state,
        "acked_at": iso(item.acked_at),
    }


def sent_json(doc: AcceptedDocument, rows: Sequence[DeliveryRow]) -> dict[str, Any]:
    return {
        "bus_id": doc.bus_id,
        "kind": doc.kind,
        "sender": doc.sender,
        "document_id": doc.document_id,
        "business_type": doc.business_type,
        "code": doc.code,
        "subject": doc.subject,
        "accepted_at": iso(doc.accepted_at),
        "recipients": [
            {
                "organ_id": r.recipient,
                "route": r.route,
                "state": r.state.value,
                "label": r.state.label,
                "business_status": r.business_status,
                "updated_at": iso(r.updated_at),
            }
            for r in rows
        ],
    }


def timeline_json(timeline: Sequence[TimelineEvent]) -> list[dict[str, Any]]:
    return [
        {
            "recipient": e.recipient,
            "state": e.state.value,
            "label": e.state.label,
            "at": iso(e.at),
            "detail": e.detail,
        }
        for e in timeline
    ]


def agencies_json(topology: Topology) -> dict[str, Any]:
    return {
        "province": topology.province,
        "agencies": [
            {
                "organ_id": str(a.organ_id),
                "name": a.name,
                "level": a.level.value,
                "parent": str(a.parent) if a.parent else None,
                "aliases": [str(x) for x in a.aliases],
            }
            for a in topology.agencies
        ],
    }
