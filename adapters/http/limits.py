"""The agency API's bounds, in one place: the handlers enforce them and the OpenAPI document states
them, so the published contract and the server cannot drift apart (issue 10 item 11)."""

from __future__ import annotations

__all__ = [
    "INBOX_PAGE_DEFAULT",
    "INBOX_PAGE_MAX",
    "MAX_ACKS",
    "MAX_ACKS_BODY_BYTES",
    "MAX_ID",
    "MAX_REASON_CHARS",
    "MAX_SMALL_BODY_BYTES",
    "SENT_PAGE_DEFAULT",
    "SENT_PAGE_MAX",
]

MAX_ID = 2**62  # inbox ids (after=, {item_id}) are database integers below this
INBOX_PAGE_DEFAULT = 100
INBOX_PAGE_MAX = 1000
SENT_PAGE_DEFAULT = 50
SENT_PAGE_MAX = 500
# A 'fail' acknowledgement's reason goes on the sender's timeline: a sentence, not a document.
MAX_REASON_CHARS = 1000
# Acknowledgements in one POST /v1/acks: a page of the inbox's worth, under MAX_SMALL_BODY_BYTES.
MAX_ACKS = 500
# ... and their body: room for every acknowledgement with the longest reason, JSON-escaped.
MAX_ACKS_BODY_BYTES = 4 * 1024 * 1024
# Any body but an envelope's (an acknowledgement; nothing for a GET) is small: more is refused (413)
# before it is read, instead of being hashed and buffered up to http.max_body_bytes.
MAX_SMALL_BODY_BYTES = 64 * 1024
