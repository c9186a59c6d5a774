"""The attachments of a document: its manifest (``edXMLManifest/Reference``), the attached files
(``AttachmentEncoded/Attachment``), and how a reference names its file (RFC 2392 ``cid:`` URLs)."""

from __future__ import annotations

import re
import urllib.parse

from lxml import etree

from bus.checks import NS, Collector
from bus.model import Attachment, ManifestReference
from bus.spooled import spooled_text

__all__ = ["LIMITS", "content_key", "read_attachments", "read_manifest"]

# Base64 with white space anywhere (as str.split() sees it), padding last: checked on the text as it
# is, without the copies that removing the white space first would make of a 100 MB attachment.
_BASE64 = re.compile(r"[A-Za-z0-9+/\s]*(?:=\s*){0,2}")
_SPACE = re.compile(r"\s+")
# Lengths of the free-text fields of an attachment (the hub's limits; reading.py has the others).
LIMITS = {"AttachmentName": 500, "Description": 500}


def read_manifest(c: Collector, root: etree._Element) -> list[ManifestReference]:
    manifest = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLBody/{{{NS}}}edXMLManifest")
    references: list[ManifestReference] = []
    for ref in c.children(manifest, "Reference") if manifest is not None else []:
        content_id = c.text(ref, "ContentId", required=True)
        if content_id is not None:
            references.append(
                ManifestReference(
                    content_id=content_id,
                    content_type=c.text(ref, "ContentType"),
                    description=c.text(ref, "Description", max_len=LIMITS["Description"]),
                    attachment_name=c.text(ref, "AttachmentName", max_len=LIMITS["AttachmentName"]),
                )
            )
    return references


def read_attachments(
    c: Collector, root: etree._Element, manifest: list[ManifestReference]
) -> list[Attachment]:
    holder = c.one(root, "AttachmentEncoded", required=False)
    attachments: list[Attachment] = []
    for item in c.children(holder, "Attachment") if holder is not None else []:
        content_id = c.text(item, "ContentId", required=True)
        data = c.one(item, "ContentTransferEncoded", required=True)
        if content_id is None or data is None:
            continue
        # libxml2's xs:base64Binary lets some garbage through ("*!*"); a broken file must not travel.
        # A long text left on disk by the parser was checked while it passed (bus/skeleton.py).
        spooled = spooled_text(data)
        size = spooled.chars if spooled is not None else len(data.text or "")
        if not (spooled.base64_ok if spooled is not None else _is_base64(data.text or "")):
            c.error(
                "attachment-base64", data, f"ContentTransferEncoded of {content_id!r} is not valid base64"
            )
        attachments.append(
            Attachment(
                content_id=content_id,
                attachment_name=c.text(item, "AttachmentName", max_len=LIMITS["AttachmentName"]),
                description=c.text(item, "Description", max_len=LIMITS["Description"]),
                content_type=c.text(item, "ContentType"),
                encoded_size=size,
            )
        )
    listed = _by_key(c, [ref.content_id for ref in manifest], "the manifest's References")
    present = _by_key(c, [att.content_id for att in attachments], "the Attachments")
    for key in sorted(listed.keys() - present.keys()):
        c.error(
            "attachment-missing",
            "/edXML/AttachmentEncoded",
            f"the manifest lists {listed[key]!r} but no Attachment carries that ContentId",
        )
    for key in sorted(present.keys() - listed.keys()):
        c.warn(
            "attachment-unlisted",
            "/edXML/AttachmentEncoded",
            f"Attachment {present[key]!r} is not listed in edXMLManifest",
        )
    return attachments


def _is_base64(text: str) -> bool:
    """Base64 characters (at least one group of four), padding only at the end, white space anywhere."""
    if not _BASE64.fullmatch(text):
        return False
    encoded = len(text) - sum(match.end() - match.start() for match in _SPACE.finditer(text))
    return encoded > 0 and encoded % 4 == 0


def _by_key(c: Collector, content_ids: list[str], what: str) -> dict[str, str]:
    """ContentIds by what they name; two spellings of one id (``1`` and ``<1>``) are an error, since a
    reference to it could then mean either file."""
    found: dict[str, str] = {}
    for content_id in content_ids:
        key = content_key(content_id)
        if key in found:
            c.error(
                "attachment-ambiguous",
                "/edXML/AttachmentEncoded",
                f"{what} name {found[key]!r} and {content_id!r}, which are the same Content-ID: "
                "give each attachment its own",
            )
        found.setdefault(key, content_id)
    return found


def content_key(content_id: str) -> str:
    """What a ContentId names, for matching a manifest ``Reference`` with its ``Attachment``.

    A reference may be a ``cid:`` URL (RFC 2392: the scheme is case-insensitive and the rest is
    %-encoded) while the attachment carries the bare Content-ID, or the other way round; the national
    axis SDK writes both spellings. ``cid:1``, ``CID:1`` and ``1`` all name attachment ``1``; angle
    brackets of a MIME Content-ID header (``<1>``) are not part of it either.
    """
    text = content_id.strip()
    if text[:4].lower() == "cid:":
        text = urllib.parse.unquote(text[4:])
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text
