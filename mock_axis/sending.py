"""What the mock axis checks before it relays a ``sendEdoc``: the file against ``hash-file``, the XML
through the one hardened parser, the sender against the authenticated system, and where each
recipient goes. The axis relays; it reads only the addressing, and does not require a schema-valid
envelope (that is the sender's and the recipient's business)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from adapters.national_axis.protocol import hash_file
from bus.errors import AxisError, InputError
from bus.organ_id import OrganId
from bus.xmlparse import parse_untrusted
from mock_axis.config import AxisSystem, MockAxisConfig

__all__ = ["Refusal", "Routing", "SendPlan", "plan_send"]


class Refusal(AxisError):
    """A FAIL answer: ``ErrorCode`` *code*, ``ErrorDesc`` *description*, HTTP status *http*."""

    def __init__(self, code: str, description: str, http: int = 200) -> None:
        super().__init__(description)
        self.code, self.description, self.http = code, description, http


_HEADER = (
    "/*[local-name()='edXML']/*[local-name()='edXMLEnvelope']/*[local-name()='edXMLHeader']"
    "/*[local-name()='MessageHeader']"
)


def _texts(tree: etree._ElementTree, path: str) -> list[str]:
    # local-name() so that any prefix, or a producer's slightly different namespace, still routes.
    found = tree.xpath(f"{_HEADER}/{path}/text()")
    return [str(t).strip() for t in found] if isinstance(found, list) else []


@dataclass(frozen=True, slots=True)
class Routing:
    """The addressing of an envelope (and, for getSentEdocList, its subject and notation)."""

    sender: str | None
    to: list[str]
    response_for: list[str]
    title: str
    notation: str

    @classmethod
    def read(cls, tree: etree._ElementTree) -> Routing:
        def first(path: str) -> str:
            return next(iter(_texts(tree, path)), "")

        return cls(
            sender=first("*[local-name()='From']/*[local-name()='OrganId']") or None,
            to=_texts(tree, "*[local-name()='To']/*[local-name()='OrganId']"),
            response_for=_texts(tree, "*[local-name()='ResponseFor']/*[local-name()='OrganId']"),
            title=first("*[local-name()='Subject']"),
            notation=first("*[local-name()='Code']/*[local-name()='CodeNotation']"),
        )


@dataclass(frozen=True, slots=True)
class SendPlan:
    """An accepted sendEdoc: the file as sent, its sender and each recipient's system."""

    body: bytes
    message_type: str
    sender: OrganId
    routing: Routing
    recipients: dict[str, AxisSystem]  # canonical OrganId -> the system serving it, in order


def plan_send(config: MockAxisConfig, system: AxisSystem, params: Mapping[str, str], body: bytes) -> SendPlan:
    """Check one sendEdoc of *system*; :class:`Refusal` says what is wrong."""
    message_type = params.get("messagetype", "")
    if message_type not in ("edoc", "status"):
        raise Refusal("400", f"messagetype must be edoc or status, not {message_type!r}")
    body = _file_body(body, params.get("hash-file"))
    try:
        routing = Routing.read(parse_untrusted(body))
    except InputError as exc:
        raise Refusal("400", f"envelope refused: {exc}") from exc
    if routing.sender is None:
        raise Refusal("400", "the envelope has no MessageHeader/From/OrganId")
    claims = [("the from parameter", params["from"])] if "from" in params else []
    for label, code in [*claims, ("From/OrganId", routing.sender)]:
        if system.entry_for(organ_of(code, label)) is None:
            raise Refusal("403", f"{label} {code} is not served by system {system.system_id} ({system.name})")
    recipients: dict[str, AxisSystem] = {}
    for code in _recipient_codes(params.get("to"), routing, message_type):
        organ = organ_of(code, "recipient")
        target = config.serving(organ)
        if target is None:
            raise Refusal("404", f"unknown recipient {organ}: no system on the axis serves it")
        recipients.setdefault(str(organ), target)
    return SendPlan(body, message_type, OrganId.parse(routing.sender), routing, recipients)


def organ_of(code: str, label: str) -> OrganId:
    try:
        return OrganId.parse(code)
    except InputError as exc:
        raise Refusal("400", f"{label}: {exc}") from exc


def _file_body(body: bytes, given: str | None) -> bytes:
    """The file without the ``\\r\\n`` the SDK appends to it, when *given* (hash-file) says so."""
    if given is None:
        return body
    wanted = given.strip().lower()
    if body.endswith(b"\r\n") and hash_file(body[:-2]) == wanted:
        return body[:-2]
    if hash_file(body) == wanted:
        return body
    raise Refusal("400", "hash-file does not match the SHA-256 of the body (damaged in transit?)")


_TO_SHAPES = (
    'one OrganId ("000.00.00.G22"), an array of them (["000.00.00.G22"]) '
    'or an array of objects with a code ([{"code":"000.00.00.G22"}])'
)


def _recipient_codes(to: str | None, routing: Routing, message_type: str) -> list[str]:
    """From the ``to`` parameter, else from the envelope: To/OrganId of a document,
    ResponseFor/OrganId of a status message.

    The SDK sends the JSON text of the caller's ``to`` value, and real callers use three shapes
    (protocol notes §6): a string, an array of strings, an array of objects with ``code`` (other
    fields of the object are ignored). An array may mix the last two."""
    if to is None:
        codes = routing.to if message_type == "edoc" else routing.response_for
        where = "To/OrganId" if message_type == "edoc" else "ResponseFor/OrganId"
        if not codes:
            raise Refusal("400", f"no recipient: no to parameter and no {where} in the envelope")
        return codes
    try:
        value = json.loads(to)
    except ValueError as exc:
        raise Refusal("400", f"to must be JSON: {_TO_SHAPES}; got {to!r}") from exc
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not entries:
        raise Refusal("400", f"to must be {_TO_SHAPES}; got {to!r}")
    return [_code_of(entry, index) for index, entry in enumerate(entries)]


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _code_of(entry: object, index: int) -> str:
    if isinstance(entry, dict):
        code = entry.get("code")
        if not isinstance(code, str) or not code:
            example = '{"code":"000.00.00.G22"}'
            raise Refusal("400", f"to[{index}] has no code: write {example}, got {_json(entry)}")
        return code
    if not isinstance(entry, str):
        raise Refusal("400", f"to[{index}] must be an OrganId or an object with a code, got {_json(entry)}")
    return entry
