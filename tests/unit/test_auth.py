"""Request signing: the worked example of docs/http-api.md is a test vector, and every part is covered."""

from __future__ import annotations

import pytest

from bus.auth import (
    AuthError,
    SignedHeaders,
    canonical_request,
    read_headers,
    sign_request,
    verify_request,
)

SECRET = b"demo-only-000.00.01.H99"
NONCE = "0123456789abcdef0123456789abcdef"
NOW = 1795700000


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_documented_vector() -> None:
    headers = sign_request(
        SECRET, "000.00.01.H99", "POST", "/v1/envelopes", b"<edXML/>", now=NOW, nonce=NONCE
    )
    assert (
        headers["X-Bus-Content-SHA256"] == "8d55f6c7bf7cd534cf027a10e1bb5731c68279c3cb991c0f4844774c685b3758"
    )
    assert headers["Authorization"] == (
        "BUS-HMAC-SHA256 Signature=265d3b2554b5911efe5d4c68097126bf647070fd555434c8f7d3b68f551f8854"
    )
    canonical = canonical_request(
        "post", "/v1/envelopes", NOW, NONCE, "000.00.01.H99", headers["X-Bus-Content-SHA256"]
    )
    assert canonical.count(b"\n") == 6
    assert not canonical.endswith(b"\n")


@pytest.mark.parametrize(
    ("method", "target", "now", "secret", "code"),
    [
        ("POST", "/v1/envelopes", NOW, SECRET, None),
        ("GET", "/v1/envelopes", NOW, SECRET, "bad-signature"),  # another method
        ("POST", "/v1/envelopes?x=1", NOW, SECRET, "bad-signature"),  # another target
        ("POST", "/v1/envelopes", NOW, b"another secret", "bad-signature"),
        ("POST", "/v1/envelopes", NOW + 301, SECRET, "stale-request"),
        ("POST", "/v1/envelopes", NOW - 301, SECRET, "stale-request"),
    ],
)
def test_each_part_is_covered(method: str, target: str, now: int, secret: bytes, code: str | None) -> None:
    headers = _lower(
        sign_request(SECRET, "000.00.01.H99", "POST", "/v1/envelopes", b"x", now=NOW, nonce=NONCE)
    )
    signed = read_headers(headers)
    if code is None:
        verify_request(signed, secret, method, target, now=now, skew_s=300)
        return
    with pytest.raises(AuthError) as caught:
        verify_request(signed, secret, method, target, now=now, skew_s=300)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("authorization", None, "unauthenticated"),
        ("x-bus-nonce", None, "unauthenticated"),
        ("authorization", "Bearer abc", "bad-authorization"),
        ("x-bus-timestamp", "hôm qua", "bad-timestamp"),
        ("x-bus-nonce", "short", "bad-nonce"),
        ("x-bus-nonce", "ngẫu-nhiên-ngẫu-nhiên-ngẫu", "bad-nonce"),
    ],
)
def test_bad_headers_are_named(header: str, value: str | None, code: str) -> None:
    headers = _lower(sign_request(SECRET, "000.00.01.H99", "GET", "/v1/inbox", now=NOW, nonce=NONCE))
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    with pytest.raises(AuthError) as caught:
        read_headers(headers)
    assert caught.value.code == code


# Issue 10 item 3: every signing header is bounded and parsed whole; nothing but AuthError comes out,
# whatever the value (an X-Bus-Timestamp of 310+ digits once raised OverflowError: a 500).
@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("x-bus-timestamp", "9" * 400, "bad-timestamp"),  # float(now - ts) overflowed
        ("x-bus-timestamp", "9" * 5000, "bad-timestamp"),  # int() refuses over 4,300 digits
        ("x-bus-timestamp", "+1795700000", "bad-timestamp"),  # int() takes a sign ...
        ("x-bus-timestamp", "1_795_700_000", "bad-timestamp"),  # ... underscores ...
        ("x-bus-timestamp", " 1795700000", "bad-timestamp"),  # ... spaces ...
        ("x-bus-timestamp", "١٧٩٥٧٠٠٠٠٠", "bad-timestamp"),  # ... and other scripts' digits
        ("authorization", "BUS-HMAC-SHA256 Signature=" + "ÿ" * 64, "bad-authorization"),  # TypeError
        ("authorization", "BUS-HMAC-SHA256 Signature=" + "a" * 100_000, "bad-authorization"),
        ("authorization", "BUS-HMAC-SHA256 Signature=", "bad-authorization"),
        ("x-bus-agency", "0" * 100_000, "unknown-agency"),
        ("x-bus-agency", "000.00.01.H99\n", "unknown-agency"),
        ("x-bus-nonce", "a" * 65, "bad-nonce"),
        ("x-bus-content-sha256", "ÿ" * 64, "bad-content-sha256"),
        ("x-bus-content-sha256", "e3b0c442", "bad-content-sha256"),
    ],
    ids=[
        "timestamp-400-digits",
        "timestamp-5000-digits",
        "timestamp-signed",
        "timestamp-underscores",
        "timestamp-space",
        "timestamp-arabic-digits",
        "signature-non-ascii",
        "signature-100k",
        "signature-empty",
        "agency-100k",
        "agency-newline",
        "nonce-65",
        "digest-non-ascii",
        "digest-short",
    ],
)
def test_no_header_value_escapes_as_anything_but_auth_error(header: str, value: str, code: str) -> None:
    headers = _lower(sign_request(SECRET, "000.00.01.H99", "GET", "/v1/inbox", now=NOW, nonce=NONCE))
    headers[header] = value
    with pytest.raises(AuthError) as caught:
        verify_request(read_headers(headers), SECRET, "GET", "/v1/inbox", now=NOW, skew_s=300)
    assert caught.value.code == code
    assert len(str(caught.value)) < 200  # a refused value is not copied back whole


def test_verify_request_takes_any_timestamp_and_signature() -> None:
    """verify_request does not rely on read_headers' bounds: SignedHeaders can be built elsewhere."""
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    huge = SignedHeaders("000.00.01.H99", 10**400, NONCE, digest, "a" * 64)
    with pytest.raises(AuthError) as caught:
        verify_request(huge, SECRET, "GET", "/v1/inbox", now=NOW, skew_s=300)
    assert caught.value.code == "stale-request"
    foreign = SignedHeaders("000.00.01.H99", NOW, NONCE, digest, "ÿ" * 64)
    with pytest.raises(AuthError) as caught:
        verify_request(foreign, SECRET, "GET", "/v1/inbox", now=NOW, skew_s=300)
    assert caught.value.code == "bad-signature"
