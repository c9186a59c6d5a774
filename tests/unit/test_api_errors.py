"""The agency API answers each error by its type, never by the wording of its message (issue 11):
adapters/http/errors.py's table, checked against docs/http-api.md, and what a request gets for each
error that intake raises, in-process with fakes (no broker, no database)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from adapters.http import ApiContext, create_app
from adapters.http.client import ApiFailure
from adapters.http.errors import ANSWERS, ApiError, api_error, guarded
from bus.auth import AuthError, sign_request
from bus.errors import (
    AlreadyFinalError,
    AxisUnavailableError,
    BadAcknowledgementError,
    BrokerError,
    BusError,
    CertificateRevokedError,
    ConfigError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    InputError,
    InvalidOrganIdError,
    MalformedXmlError,
    Problem,
    RevocationUnknownError,
    SignatureError,
    SignatureMissingError,
    StoreError,
    StoreUnavailableError,
    UnknownDocumentError,
    UnroutableError,
    UnsafeXmlError,
    XmlTooLargeError,
)
from bus.settings import load_topology
from bus.xmlparse import XmlLimits, parse_untrusted
from tests.conftest import ROOT

PROBLEM = Problem("schema", "/edXML/edXMLEnvelope", "missing From", line=3)
REVOKED = CertificateRevokedError(
    "revoked",
    serial=7,
    revoked_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    reason="keyCompromise",
    issuer="CA",
)

# (an error, the status and code docs/http-api.md gives it, further fields of the error body)
Case = tuple[BaseException, int, str, dict[str, Any]]
DOCUMENTED: list[Case] = [
    (AuthError("bad-signature", "no"), 401, "bad-signature", {}),
    (AuthError("replayed-request", "again"), 401, "replayed-request", {}),
    (
        EnvelopeInvalidError([PROBLEM]),
        400,
        "invalid-envelope",
        {
            "problems": [
                {"code": "schema", "path": "/edXML/edXMLEnvelope", "message": "missing From", "line": 3}
            ]
        },
    ),
    (DuplicateEnvelopeError("bus-1", "seen"), 409, "duplicate", {"bus_id": "bus-1"}),
    (ForgedSenderError("not you"), 403, "forged-sender", {}),
    (XmlTooLargeError("XML body of 9 bytes exceeds the limit of 8 bytes"), 413, "too-large", {}),
    (UnsafeXmlError("DOCTYPE"), 400, "unsafe-xml", {}),
    (MalformedXmlError("not XML"), 400, "malformed-xml", {}),
    (SignatureError("forged"), 400, "signature-invalid", {}),
    (SignatureMissingError("none"), 400, "signature-invalid", {}),
    (REVOKED, 400, "signature-invalid", {}),
    (UnknownDocumentError("never carried"), 400, "unknown-document", {}),
    (BadAcknowledgementError("a 'fail' acknowledgement needs a reason"), 400, "bad-acknowledgement", {}),
    (AlreadyFinalError("envelope 7 was already acknowledged as done"), 409, "already-final", {}),
    (RevocationUnknownError("CRL stale"), 503, "revocation-unavailable", {}),
    (BrokerError("nack"), 503, "broker-unavailable", {}),
    (UnroutableError("no queue"), 503, "broker-unavailable", {}),
    (StoreError("db failed"), 503, "store-unavailable", {}),
    (StoreUnavailableError("db down"), 503, "store-unavailable", {}),
]
# Bad input of a kind the table has no entry for: a 400 that docs/http-api.md does not list.
UNDOCUMENTED = [
    (InvalidOrganIdError("1.2"), 400, "invalid-input", {}),
    (InputError("bad"), 400, "invalid-input", {}),
]


def _name(case: Case) -> str:
    return type(case[0]).__name__


@pytest.mark.parametrize("case", DOCUMENTED + UNDOCUMENTED, ids=_name)
def test_each_error_type_has_its_status_and_code(
    case: Case,
) -> None:
    error, status, code, fields = case
    answer = api_error(error)
    assert answer is not None
    assert (answer.status, answer.code, answer.extra) == (status, code, fields)


def test_every_entry_of_the_table_is_tested_here() -> None:
    assert set(ANSWERS) <= {type(error) for error, *_ in DOCUMENTED + UNDOCUMENTED} | {AuthError}


def _documented_codes() -> Iterator[tuple[int, str]]:
    """(status, code) of every row of docs/http-api.md's error table: ``| 409 | `duplicate` (...) |``."""
    for line in (ROOT / "docs" / "http-api.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| (\d{3}) \| (.*?) \|", line)
        if row:
            for code in re.findall(r"`([a-z0-9-]+)`", row.group(2)):
                yield int(row.group(1)), code


@pytest.mark.parametrize("case", DOCUMENTED, ids=_name)
def test_the_status_is_the_documented_one(case: Case) -> None:
    _, status, code, _ = case
    assert (status, code) in set(_documented_codes())


def test_what_the_api_answers_itself_and_what_it_does_not_know() -> None:
    own = ApiError(415, "unsupported-media-type", "send XML")
    assert api_error(own) is own
    for unknown in (ConfigError("bad"), AxisUnavailableError("5xx"), RuntimeError()):
        assert api_error(unknown) is None  # the caller decides: 500, or 503 outcome-unknown on intake


def test_messages_are_the_errors_own_but_where_the_envelope_was_not_accepted() -> None:
    messages = {
        type(error).__name__: api_error(error).message  # type: ignore[union-attr]
        for error in (
            ForgedSenderError("From is 000.00.21.H99"),
            BrokerError("channel closed"),
            RevocationUnknownError("CRL stale"),
        )
    }
    assert messages == {
        "ForgedSenderError": "From is 000.00.21.H99",
        "BrokerError": "the envelope was NOT accepted: retry later",
        "RevocationUnknownError": "the envelope was NOT accepted: CRL stale; send it again later",
    }


# -- the typed error behind the 413 ----------------------------------------------------------------------


def test_an_oversized_body_is_refused_with_its_own_type() -> None:
    with pytest.raises(XmlTooLargeError, match="exceeds the limit of 1000 bytes") as caught:
        parse_untrusted(b"<a>" + b"x" * 1000 + b"</a>", XmlLimits(max_bytes=1000))
    assert isinstance(caught.value, UnsafeXmlError)  # still refused as unsafe by whoever catches that
    assert api_error(caught.value).status == 413  # type: ignore[union-attr]


def test_other_unsafe_xml_is_not_taken_for_too_large() -> None:
    with pytest.raises(UnsafeXmlError) as caught:
        parse_untrusted(b"<a>" * 11 + b"</a>" * 11, XmlLimits(max_depth=10))
    assert not isinstance(caught.value, XmlTooLargeError)
    assert api_error(caught.value).status == 400  # type: ignore[union-attr]


@pytest.mark.parametrize("error", [AuthError, ApiError, ApiFailure])
def test_the_api_errors_are_in_the_one_tree(error: type[Exception]) -> None:
    assert issubclass(error, BusError)


# -- in a handler --------------------------------------------------------------------------------------

SCOPE = {"type": "http", "method": "GET", "path": "/v1/inbox", "headers": [], "query_string": b""}


@pytest.mark.asyncio
async def test_a_handler_answers_an_error_as_json_by_the_table() -> None:
    async def handler(request: Request) -> Response:
        raise AlreadyFinalError("envelope 7 was already acknowledged as done")

    response = await guarded(handler)(Request(SCOPE))
    assert response.status_code == 409
    assert response.body == (
        b'{"error":{"code":"already-final","message":"envelope 7 was already acknowledged as done"}}'
    )


@pytest.mark.asyncio
async def test_an_error_nobody_expected_is_a_500_that_says_nothing_of_it() -> None:
    async def handler(request: Request) -> Response:
        raise ConfigError("postgresql://bus@db: no such role")

    response = await guarded(handler)(Request(SCOPE))
    assert response.status_code == 500
    assert b"internal" in response.body
    assert b"postgresql" not in response.body


@pytest.mark.asyncio
async def test_a_database_outage_is_503_that_says_nothing_of_the_database() -> None:
    """Any route but a send (whose store failure is outcome-unknown): the request may be repeated."""

    async def handler(request: Request) -> Response:
        raise StoreUnavailableError("postgresql://bus@db: connection refused")

    response = await guarded(handler)(Request(SCOPE))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert b"store-unavailable" in response.body
    assert b"postgresql" not in response.body


# -- what a sender gets for each refusal of intake ---------------------------------------------------------

SENDER = "000.00.01.H99"


class FakeIntake:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def accept(self, body: bytes, *, sender: object) -> None:
        raise self.error


class FakeStore:
    async def remember_nonce(self, agency: str, nonce: str, at: dt.datetime, *, keep: dt.timedelta) -> bool:
        return True


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (DuplicateEnvelopeError("bus-1", "already accepted"), 409, "duplicate"),
        (XmlTooLargeError("XML body of 9 bytes exceeds the limit of 8 bytes"), 413, "too-large"),
        (UnsafeXmlError("XML with a DOCTYPE is refused"), 400, "unsafe-xml"),
        (BrokerError("nack"), 503, "broker-unavailable"),
        # Whatever else fails in intake (the store) may have happened after some deliveries: unknown.
        (StoreError("db down"), 503, "outcome-unknown"),
        (RuntimeError("bug"), 503, "outcome-unknown"),
    ],
)
async def test_a_refused_envelope_gets_the_answer_of_its_error(
    error: BaseException, status: int, code: str
) -> None:
    ctx = ApiContext(
        topology=load_topology(ROOT / "config" / "example-province.toml"),
        intake=FakeIntake(error),  # type: ignore[arg-type]
        store=FakeStore(),  # type: ignore[arg-type]
        secrets={SENDER: f"demo-only-{SENDER}".encode()},
    )
    body = b"<edXML/>"
    headers = {
        **sign_request(f"demo-only-{SENDER}".encode(), SENDER, "POST", "/v1/envelopes", body),
        "Content-Type": "application/xml",
    }
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://bus") as http:
        answer = await http.post("/v1/envelopes", content=body, headers=headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert ("retry-after" in answer.headers) == (status == 503)
    rejected = ctx.metrics.registry.get_sample_value("bus_envelopes_rejected_total", {"reason": code})
    assert rejected == 1  # counted by the code it was answered with
