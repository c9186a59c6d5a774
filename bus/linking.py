"""What an envelope concerns, besides its recipients: the document a status answers, the one a
revocation, update or replacement changes, and who a take-back request (13) goes to. The intake
(:mod:`bus.intake`) writes these as events on the concerned document's timeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bus.delivery import DeliveryState, TimelineEvent
from bus.errors import UnknownDocumentError
from bus.model import BussinessDocType, DocumentEnvelope, StatusMessage
from bus.organ_id import OrganId

__all__ = ["Links", "OriginalsPort", "links_of"]


class OriginalsPort(Protocol):
    async def original(self, sender: str, document_id: str) -> tuple[str, list[str]] | None: ...


@dataclass(frozen=True, slots=True)
class Links:
    """The concerned document (its bus id), who gets this envelope, the events for the concerned
    timeline with their keys, and the business status it sets (bus id, recipient codes, code)."""

    related: str | None
    recipients: list[OrganId]
    links: list[tuple[TimelineEvent, str]]
    business_status: tuple[str, Sequence[str], str] | None


_DOC_TYPE_LABELS = {
    BussinessDocType.REVOCATION: "Thu hồi",
    BussinessDocType.UPDATE: "Cập nhật",
    BussinessDocType.REPLACEMENT: "Thay thế",
}


async def links_of(
    message: DocumentEnvelope | StatusMessage,
    sender: OrganId,
    bus_id: str,
    now: dt.datetime,
    *,
    store: OriginalsPort,
    codes_of: Callable[[OrganId], list[str]],
) -> Links:
    """What this envelope concerns: the document a status answers, or the one a revocation, update
    or replacement changes; and who a take-back request (13) goes to."""
    if isinstance(message, StatusMessage):
        about = message.response_for
        original = await store.original(str(about.organ_id), about.document_id)
        code = message.status_code
        detail = f"{code.value} {code.label}" + (f": {message.description}" if message.description else "")
        if about.organ_id == sender:
            # The document's own sender: a take-back request (13) goes to its recipients.
            if original is None:
                raise UnknownDocumentError(
                    f"status {code.value} from {sender} concerns document {about.document_id!r}, "
                    "which this axis never carried: nobody to send it to"
                )
            related, recipients = original
            event = TimelineEvent(related, None, DeliveryState.RELATED, now, f"{detail} (gói tin {bus_id})")
            return Links(related, [OrganId.parse(r) for r in recipients], [(event, f"{bus_id}|link")], None)
        if original is None:
            return Links(None, [about.organ_id], [], None)
        related, recipients = original
        codes = codes_of(sender)
        recipient = next((r for r in recipients if r in codes), None)
        if recipient is None:
            # Not one of the document's recipients: it still reaches the document's sender, but
            # writes nothing on a timeline it has no part in.
            return Links(None, [about.organ_id], [], None)
        event = TimelineEvent(related, recipient, DeliveryState.STATUS, now, detail)
        return Links(related, [about.organ_id], [(event, f"{bus_id}|link")], (related, codes, code.value))
    addressed = [r.organ_id for r in message.recipients]
    doc_type = message.business_type
    if doc_type is BussinessDocType.NEW:
        return Links(None, addressed, [], None)
    concerned = message.bussiness.document_id if message.bussiness and message.bussiness.document_id else None
    targets = [concerned or message.document_id]
    if message.bussiness is not None:
        targets += [r.document_id for r in message.bussiness.replacements]
    links: list[tuple[TimelineEvent, str]] = []
    first: str | None = None
    for target in dict.fromkeys(targets):
        found = await store.original(str(sender), target)
        if found is None or found[0] == bus_id:
            continue
        first = first or found[0]
        number = f"{message.code.number}/{message.code.notation}"
        detail = f"{_DOC_TYPE_LABELS[doc_type]}: văn bản {number} (gói tin {bus_id})"
        links.append(
            (
                TimelineEvent(found[0], None, DeliveryState.RELATED, now, detail),
                f"{bus_id}|link|{found[0]}",
            )
        )
    return Links(first, addressed, links, None)
