"""Log lines never carry a secret, a key or a document body (issue 5, item 4): the configured output,
JSON and console, ours and the standard library's, scanned for the values that were passed in."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bus.logs import REDACTED, configure_logging, redact

SECRETS = {
    "secret": "agency-shared-secret-0123456789",
    "password": "hunter2-operator",
    "authorization": "BUS-HMAC-SHA256 Signature=9f86d081884c7d659a2feaa0c55ad015",
    "signature": "MEUCIQDsignaturevalue",
    "private_key": "-----BEGIN PRIVATE KEY-----MIIEvQ",
    "body": "<edXML:edXMLEnvelope>Nội dung công văn mật</edXML:edXMLEnvelope>",
    "session_token": "tok-4a1b2c3d",
    "apiKey": "ak-live-77",
}
BODY_BYTES = b"<edXML>raw envelope bytes</edXML>"


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """configure_logging writing to the captured standard error; the previous set-up restored after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield capsys
    structlog.configure(**saved)
    root.handlers, root.level = handlers, level


def _emit(**extra: Any) -> None:
    # A fresh logger: the modules' loggers are cached on first use and must not keep this set-up.
    structlog.get_logger("test.logs").info(
        "inbox.fetched",
        bus_id="5b0c7a52-1c1e-5e0b-9a59-0d3c8f7e2a10",
        document_id="000.00.01.H99,2026/11/20,17/SNV-VP",
        sender="000.00.01.H99",
        recipient="000.00.21.H99",
        dead_key="x-death:ab12",
        **SECRETS,
        envelope=BODY_BYTES,
        headers={
            "Authorization": SECRETS["authorization"],
            "x-bus-id": "b1",
            "X-Bus-Signature": "hdr-sig-value",
        },
        attempts=[{"token": "nested-token-value", "status": 500}],
        url="postgresql+asyncpg://bus:pg-password-42@db.tinh.gov.vn/bus",
        **extra,
    )


def _assert_clean(text: str) -> None:
    for value in [
        *SECRETS.values(),
        "raw envelope bytes",
        "nested-token-value",
        "pg-password-42",
        "hdr-sig-value",
    ]:
        assert value not in text, value


def test_json_lines_keep_the_envelope_fields_and_lose_every_secret(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    _emit()
    [line] = logs.readouterr().err.splitlines()
    record = json.loads(line)
    _assert_clean(line)
    assert record["event"] == "inbox.fetched"
    assert record["document_id"] == "000.00.01.H99,2026/11/20,17/SNV-VP"
    assert record["sender"] == "000.00.01.H99"
    assert record["recipient"] == "000.00.21.H99"
    assert record["dead_key"] == "x-death:ab12"  # an identifier, not key material
    assert all(record[name] == REDACTED for name in SECRETS)
    assert record["envelope"] == f"[{len(BODY_BYTES)} bytes dropped]"
    assert record["headers"] == {"Authorization": REDACTED, "x-bus-id": "b1", "X-Bus-Signature": REDACTED}
    assert record["attempts"] == [{"token": REDACTED, "status": 500}]
    assert record["url"] == "postgresql+asyncpg://bus:***@db.tinh.gov.vn/bus"


def test_console_lines_are_redacted_too(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=False)
    _emit()
    text = logs.readouterr().err
    _assert_clean(text)
    assert "inbox.fetched" in text
    assert "000.00.21.H99" in text


def test_library_lines_and_tracebacks_go_through_the_same_redaction(
    logs: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True)
    logging.getLogger("aio_pika.robust_connection").warning(
        "Connection to amqp://guest:broker-pass-9@rabbit.tinh.gov.vn:5672/ closed. Reconnecting"
    )
    try:
        raise ConnectionError("cannot reach postgresql://bus:pg-pass-in-traceback@db/bus")
    except ConnectionError:
        structlog.get_logger("test.logs").exception("store.failed")
    library, ours = (json.loads(line) for line in logs.readouterr().err.splitlines())
    assert library["logger"] == "aio_pika.robust_connection"
    assert library["level"] == "warning"
    assert "amqp://guest:***@rabbit.tinh.gov.vn:5672/" in library["event"]
    assert "broker-pass-9" not in json.dumps(library)
    assert "postgresql://bus:***@db/bus" in ours["exception"]
    assert "pg-pass-in-traceback" not in json.dumps(ours)


def test_library_info_lines_stay_quiet(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("uvicorn.error").error("Exception in ASGI application")
    [line] = logs.readouterr().err.splitlines()
    assert json.loads(line)["event"] == "Exception in ASGI application"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("secret", True),
        ("national_axis_secret", True),
        ("X-Bus-Signature", True),
        ("privateKey", True),
        ("body", True),
        ("refresh-token", True),
        ("bus_id", False),
        ("document_id", False),
        ("routing_key", False),
        ("keyword", False),
        ("bodyguard", False),
    ],
)
def test_field_names_are_matched_by_word(name: str, secret: bool) -> None:
    out = redact(None, "info", {"event": "e", name: "v"})
    assert (out[name] == REDACTED) is secret
