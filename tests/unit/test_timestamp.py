"""RFC 3161 time-stamps of audit checkpoints (issue 15 item 2), against openssl's own TSA.

Every token here was written by ``openssl ts -reply`` (:mod:`tests.tsa`); the refusals are the
issue's: a foreign time-stamp (another digest), a stale one (genTime outside the window), a TSA that
is not trusted, and tokens changed after signing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from collections.abc import Iterator, Sequence

import pytest
from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from adapters.tsa import request_timestamp
from bus.timestamp import (
    TimeStamp,
    TimestampError,
    parse_response,
    timestamp_request,
    token_certificates,
    token_nonce,
    verify_token,
)
from tests.crlkit import closed_port_url
from tests.tsa import LocalTsa

DIGEST = hashlib.sha256(b"checkpoint 41: root 7f3a...").digest()
OTHER = hashlib.sha256(b"checkpoint 42: root 09bc...").digest()
NONCE = 0x1234_5678_9ABC


@pytest.fixture(scope="module")
def tsa() -> Iterator[LocalTsa]:
    with LocalTsa("Bus TSA") as local:
        yield local


@pytest.fixture(scope="module")
def foreign() -> Iterator[LocalTsa]:
    with LocalTsa("Foreign TSA") as local:
        yield local


def stamp(tsa: LocalTsa, digest: bytes = DIGEST, nonce: int = NONCE) -> bytes:
    return parse_response(tsa.reply(timestamp_request(digest, nonce=nonce)))


@pytest.fixture(scope="module")
def token(tsa: LocalTsa) -> bytes:
    return stamp(tsa)


def verify(
    token: bytes,
    tsa: LocalTsa,
    *,
    nonce: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
) -> TimeStamp:
    """*token* checked for DIGEST against *tsa*'s CA."""
    return verify_token(
        token,
        digest=DIGEST,
        trusted=[tsa.ca_certificate],
        nonce=nonce,
        not_before=not_before,
        not_after=not_after,
        extra_certificates=extra_certificates,
    )


def test_a_good_token_verifies(tsa: LocalTsa, token: bytes) -> None:
    now = dt.datetime.now(dt.UTC)
    minute = dt.timedelta(minutes=1)
    stamped = verify(token, tsa, nonce=NONCE, not_before=now - minute, not_after=now + minute)
    assert abs(stamped.gen_time - now) < dt.timedelta(seconds=5)
    assert stamped.gen_time.utcoffset() == dt.timedelta(0)
    assert stamped.serial >= 1
    assert stamped.tsa == tsa.tsa_certificate
    assert stamped.tsa.subject.rfc4514_string() == "CN=Bus TSA,O=Tests"
    assert set(stamped.certificates) == {tsa.tsa_certificate, tsa.ca_certificate}
    assert stamped.token == token
    assert token_certificates(token) == stamped.certificates
    assert token_nonce(token) == NONCE


def test_an_rsa_tsa_verifies_too() -> None:
    with LocalTsa("RSA TSA", key_type="rsa") as rsa_tsa:
        stamped = verify(stamp(rsa_tsa), rsa_tsa)
    assert isinstance(stamped.tsa.public_key(), rsa.RSAPublicKey)
    assert stamped.tsa == rsa_tsa.tsa_certificate


def test_the_serial_numbers_of_two_tokens_differ(tsa: LocalTsa, token: bytes) -> None:
    assert verify(stamp(tsa), tsa).serial != verify(token, tsa).serial


def test_the_nonce_is_checked(tsa: LocalTsa, token: bytes) -> None:
    with pytest.raises(TimestampError, match=f"nonce is {NONCE}, expected {NONCE + 1}"):
        verify(token, tsa, nonce=NONCE + 1)


def test_a_foreign_time_stamp_for_other_data_is_refused(tsa: LocalTsa) -> None:
    other = stamp(tsa, OTHER)
    with pytest.raises(TimestampError, match="foreign time-stamp") as refused:
        verify(other, tsa)
    assert OTHER.hex() in str(refused.value)
    assert DIGEST.hex() in str(refused.value)


def test_a_tsa_whose_ca_is_not_trusted_is_refused(tsa: LocalTsa, foreign: LocalTsa) -> None:
    theirs = stamp(foreign)
    assert verify(theirs, foreign).tsa == foreign.tsa_certificate
    # The token carries the foreign root (openssl's -chain): carried is not trusted.
    assert foreign.ca_certificate in token_certificates(theirs)
    with pytest.raises(TimestampError, match="does not chain to a trusted CA") as refused:
        verify(theirs, tsa)
    assert "Foreign TSA" in str(refused.value)


def test_the_signer_certificate_itself_may_be_the_trust_anchor(tsa: LocalTsa, token: bytes) -> None:
    stamped = verify_token(token, digest=DIGEST, trusted=[tsa.tsa_certificate])
    assert stamped.tsa == tsa.tsa_certificate


@pytest.mark.parametrize(
    ("earliest", "latest", "word"),
    [(dt.timedelta(hours=1), None, "before"), (None, -dt.timedelta(hours=1), "after")],
    ids=["not-yet", "too-old"],
)
def test_a_stale_time_stamp_is_refused(
    tsa: LocalTsa, token: bytes, earliest: dt.timedelta | None, latest: dt.timedelta | None, word: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    not_before = None if earliest is None else now + earliest
    not_after = None if latest is None else now + latest
    with pytest.raises(TimestampError, match=rf"stale time-stamp: genTime \S+ is {word} the"):
        verify(token, tsa, not_before=not_before, not_after=not_after)


def test_a_flipped_signature_byte_is_refused(tsa: LocalTsa, token: bytes) -> None:
    signature = cms.ContentInfo.load(token)["content"]["signer_infos"][0]["signature"].native
    at = token.rindex(signature) + len(signature) - 1
    broken = token[:at] + bytes([token[at] ^ 0x01]) + token[at + 1 :]
    with pytest.raises(TimestampError, match="signature does not verify with the key of CN=Bus TSA"):
        verify(broken, tsa)


def test_a_changed_gen_time_is_refused(tsa: LocalTsa, token: bytes) -> None:
    tst_info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    encoded = tst_info["gen_time"].dump()  # 0x18, length, "YYYYMMDDHHMMSSZ"
    minute_tens = 2 + 10
    changed = bytearray(encoded)
    changed[minute_tens] = ord("0") + (changed[minute_tens] - ord("0") + 1) % 6
    assert token.count(encoded) == 1
    with pytest.raises(
        TimestampError, match=r"message-digest attribute \(sha256 \w+\) does not match the TSTInfo"
    ):
        verify(token.replace(encoded, bytes(changed)), tsa)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (b"not a TimeStampReq", "rejection, failInfo badDataFormat"),
        (
            tsp.TimeStampReq(
                {
                    "version": "v1",
                    "message_imprint": {"hash_algorithm": {"algorithm": "sha1"}, "hashed_message": bytes(20)},
                }
            ).dump(),
            "rejection, failInfo badAlg",
        ),
    ],
    ids=["garbage", "sha1"],
)
def test_a_refusal_names_the_status(tsa: LocalTsa, query: bytes, status: str) -> None:
    with pytest.raises(TimestampError, match=f"refused the time-stamp request \\(status {status}"):
        parse_response(tsa.reply(query))


def test_an_answer_that_is_not_der_is_refused() -> None:
    with pytest.raises(TimestampError, match="not a DER TimeStampResp"):
        parse_response(b"<html>502 Bad Gateway</html>")


def test_a_signer_certificate_not_in_the_token_can_be_given(tsa: LocalTsa) -> None:
    request = tsp.TimeStampReq.load(timestamp_request(DIGEST, nonce=NONCE)).copy()
    request["cert_req"] = False
    bare = parse_response(tsa.reply(request.dump(force=True)))
    assert token_certificates(bare) == ()
    with pytest.raises(TimestampError, match="neither in the token nor among those given"):
        verify(bare, tsa)
    assert verify(bare, tsa, extra_certificates=[tsa.tsa_certificate]).tsa == tsa.tsa_certificate


# The TSA's key with another certificate: openssl will not sign with a certificate whose timeStamping
# usage is not critical, so such tokens are openssl's, signed again here.


def _variant(
    tsa: LocalTsa, usage: x509.ExtendedKeyUsage | None, *, critical: bool = True
) -> x509.Certificate:
    original = tsa.tsa_certificate
    ca_key = serialization.load_pem_private_key(tsa.ca_key_path.read_bytes(), None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(original.subject)
        .issuer_name(original.issuer)
        .public_key(original.public_key())
        .serial_number(original.serial_number)  # the same issuer and serial: the SignerInfo's sid matches
        .not_valid_before(original.not_valid_before_utc)
        .not_valid_after(original.not_valid_after_utc - dt.timedelta(seconds=1))
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=critical)
    return builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]


def _resign(token: bytes, tsa: LocalTsa, signer: x509.Certificate, *, keep_pin: bool = False) -> bytes:
    signed_data = cms.ContentInfo.load(token)["content"]
    old = signed_data["signer_infos"][0]
    kept = [a for a in old["signed_attrs"] if keep_pin or a["type"].native != "signing_certificate_v2"]
    info = cms.SignerInfo(
        {
            "version": old["version"].native,
            "sid": old["sid"],
            "digest_algorithm": old["digest_algorithm"],
            "signed_attrs": kept,
            "signature_algorithm": old["signature_algorithm"],
            "signature": b"",
        }
    )
    key = serialization.load_pem_private_key(tsa.tsa_key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    info["signature"] = key.sign(b"\x31" + info["signed_attrs"].dump()[1:], ec.ECDSA(hashes.SHA256()))
    certificate = asn1_x509.Certificate.load(signer.public_bytes(serialization.Encoding.DER))
    data = cms.SignedData(
        {
            "version": signed_data["version"].native,
            "digest_algorithms": signed_data["digest_algorithms"],
            "encap_content_info": signed_data["encap_content_info"],
            "certificates": [cms.CertificateChoices(name="certificate", value=certificate)],
            "signer_infos": [info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": data}).dump())


TIME_STAMPING = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING])


@pytest.mark.parametrize(
    ("usage", "critical", "refusal"),
    [
        (TIME_STAMPING, True, None),  # the same certificate, signed again: accepted, so the helper is sound
        (TIME_STAMPING, False, "timeStamping, but not critical"),
        (None, True, "has no extendedKeyUsage"),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True, "not for time-stamping"),
    ],
    ids=["critical", "not-critical", "absent", "client-auth"],
)
def test_the_tsa_certificate_must_be_for_time_stamping(
    tsa: LocalTsa, token: bytes, usage: x509.ExtendedKeyUsage | None, critical: bool, refusal: str | None
) -> None:
    resigned = _resign(token, tsa, _variant(tsa, usage, critical=critical))
    if refusal is None:
        assert verify(resigned, tsa).tsa.serial_number == tsa.tsa_certificate.serial_number
        return
    with pytest.raises(TimestampError, match=refusal):
        verify(resigned, tsa)


def test_the_signing_certificate_attribute_pins_the_certificate(tsa: LocalTsa, token: bytes) -> None:
    swapped = _resign(token, tsa, _variant(tsa, TIME_STAMPING), keep_pin=True)
    with pytest.raises(TimestampError, match="signing_certificate_v2 attribute pins certificate sha256"):
        verify(swapped, tsa)


@pytest.mark.asyncio
async def test_request_timestamp_end_to_end(tsa: LocalTsa) -> None:
    before = tsa.requests
    token = await request_timestamp(tsa.url, DIGEST, timeout_s=5)
    assert tsa.requests == before + 1
    stamped = verify_token(token, digest=DIGEST, trusted=[tsa.ca_certificate], nonce=token_nonce(token))
    assert stamped.tsa == tsa.tsa_certificate
    assert token_nonce(await request_timestamp(tsa.url, DIGEST, nonce=99)) == 99


@pytest.mark.asyncio
async def test_request_timestamp_where_nothing_listens_names_the_url() -> None:
    url = closed_port_url()
    with pytest.raises(TimestampError, match=f"cannot reach the TSA at {url}"):
        await request_timestamp(url, DIGEST, timeout_s=2)


@pytest.mark.asyncio
async def test_request_timestamp_refuses_a_reply_to_another_request(
    tsa: LocalTsa, monkeypatch: pytest.MonkeyPatch
) -> None:
    def other_nonce(query: bytes) -> bytes:
        return timestamp_request(DIGEST, nonce=tsp.TimeStampReq.load(query)["nonce"].native + 1)

    monkeypatch.setattr(tsa, "rewrite_query", other_nonce)
    with pytest.raises(TimestampError, match=f"TSA at {tsa.url} answered with nonce 8, not the 7 sent"):
        await request_timestamp(tsa.url, DIGEST, nonce=7)


@pytest.mark.asyncio
async def test_request_timestamp_reports_a_refusal_with_the_url(
    tsa: LocalTsa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tsa, "rewrite_query", lambda query: b"garbage")
    with pytest.raises(TimestampError, match=f"TSA at {tsa.url}: the TSA refused .*status rejection"):
        await request_timestamp(tsa.url, DIGEST)


@pytest.mark.asyncio
async def test_request_timestamp_reports_an_http_error_with_the_url(
    tsa: LocalTsa, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(query: bytes) -> bytes:
        raise RuntimeError("the TSA's HSM is offline")

    monkeypatch.setattr(tsa, "rewrite_query", broken)
    with pytest.raises(TimestampError, match=f"TSA at {tsa.url} answered HTTP 500"):
        await request_timestamp(tsa.url, DIGEST)


@pytest.mark.asyncio
async def test_request_timestamp_gives_up_after_its_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/tsa"
        with pytest.raises(TimestampError, match=f"TSA at {url} did not answer within 0.2 s"):
            await request_timestamp(url, DIGEST, timeout_s=0.2)
