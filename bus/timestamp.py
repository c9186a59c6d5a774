"""RFC 3161 time-stamps for the signed audit checkpoints (issue 15 item 2): the request, and the check.

A time-stamping authority (TSA) signs "this digest existed at genTime". The bus sends the SHA-256 of
a checkpoint and keeps the token beside it; :func:`verify_token` is what makes the token worth
keeping, and it refuses, each with its own message:

* a *foreign* time-stamp: a valid token that stamps other data (its messageImprint is not our digest);
* a *stale* time-stamp: genTime outside the window the caller allows (``not_before``/``not_after``);
* a token that a TSA the caller does not trust signed: the signer certificate must chain to one of
  ``trusted`` and carry the critical extendedKeyUsage id-kp-timeStamping (RFC 3161 §2.3);
* anything changed after signing: the CMS signature covers the signed attributes, whose
  message-digest covers the TSTInfo (RFC 5652 §5.4), and a signing-certificate(-v2) attribute, when
  present, pins the signer's certificate (RFC 2634 §5.4, RFC 5035), so another certificate with the
  same key cannot be swapped in.

Authenticity is checked before the contents, so what an error message says about the contents
(another digest, genTime) is what the TSA signed. This module does no network I/O: the HTTP exchange
with a TSA is :mod:`adapters.tsa`. ``cryptography`` does not expose CMS SignedData or the TSP
structures, so they are parsed with ``asn1crypto``; the signatures are checked with ``cryptography``.
Signatures supported: RSA PKCS#1 v1.5 and ECDSA, with SHA-256, SHA-384 or SHA-512.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from bus.errors import BusError

__all__ = [
    "TimeStamp",
    "TimestampError",
    "parse_response",
    "timestamp_request",
    "token_certificates",
    "token_nonce",
    "verify_token",
]

_SHA256_BYTES = 32
_MAX_CHAIN = 5
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# The RFC 3161 §2.4.2 names, for messages; asn1crypto spells them in snake case.
_STATUS_NAMES = {
    "granted": "granted",
    "granted_with_mods": "grantedWithMods",
    "rejection": "rejection",
    "waiting": "waiting",
    "revocation_warning": "revocationWarning",
    "revocation_notification": "revocationNotification",
}
_FAIL_NAMES = {
    "bad_alg": "badAlg",
    "bad_request": "badRequest",
    "bad_data_format": "badDataFormat",
    "time_not_available": "timeNotAvailable",
    "unaccepted_policy": "unacceptedPolicy",
    "unaccepted_extensions": "unacceptedExtension",
    "add_info_not_available": "addInfoNotAvailable",
    "system_failure": "systemFailure",
}
# asn1crypto raises these on bytes that are not the structure asked for, some of them lazily.
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


class TimestampError(BusError):
    """A time-stamp could not be obtained, or a token is refused: the message says what and why."""


@dataclass(frozen=True)
class TimeStamp:
    """A token that checked out: when the TSA saw the digest, and who says so."""

    gen_time: dt.datetime  # aware, UTC
    serial: int
    tsa: x509.Certificate  # the signer
    certificates: tuple[x509.Certificate, ...]  # every certificate in the token
    token: bytes  # the DER TimeStampToken (a CMS ContentInfo)


class _TimeStampResp(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    # asn1crypto 1.5's TimeStampResp makes the token mandatory; RFC 3161 §2.4.2 makes it OPTIONAL,
    # and a rejection has none.
    _fields = [  # noqa: RUF012  # asn1crypto's schema attribute
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def timestamp_request(digest: bytes, *, nonce: int) -> bytes:
    """A DER TimeStampReq for *digest* (already the SHA-256 of the data), asking for the TSA's certificate."""
    if len(digest) != _SHA256_BYTES:
        raise ValueError(f"the digest to time-stamp must be a SHA-256 value of 32 bytes, got {len(digest)}")
    if nonce < 0:
        raise ValueError("the nonce must not be negative")
    request = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
            "nonce": nonce,
            "cert_req": True,
        }
    )
    return bytes(request.dump())


def parse_response(der: bytes) -> bytes:
    """The DER TimeStampToken of a DER TimeStampResp; :class:`TimestampError` unless it was granted."""
    try:
        response = _TimeStampResp.load(der, strict=True)
        status_info = response["status"]
        status = status_info["status"].native
        texts = status_info["status_string"].native or []
        failures = status_info["fail_info"].native or set()
        token = response["time_stamp_token"]
    except _ASN1_ERRORS as exc:
        raise TimestampError(f"the TSA's answer is not a DER TimeStampResp: {exc}") from exc
    if status not in ("granted", "granted_with_mods"):
        detail = f"status {_STATUS_NAMES.get(status, status)}"
        if failures:
            detail += ", failInfo " + ", ".join(sorted(_FAIL_NAMES.get(f, str(f)) for f in failures))
        if texts:
            detail += ": " + "; ".join(texts)
        raise TimestampError(f"the TSA refused the time-stamp request ({detail})")
    if isinstance(token, core.Void):
        raise TimestampError(f"the TSA answered {_STATUS_NAMES[status]} but sent no time-stamp token")
    return bytes(token.dump())


@dataclass(frozen=True)
class _Token:
    # The token's parts that the checks need, parsed once.
    tst_info: Any
    tst_info_der: bytes
    signer_info: Any
    certificates: tuple[x509.Certificate, ...]


def _parse_token(token: bytes) -> _Token:
    try:
        content_info = cms.ContentInfo.load(token, strict=True)
        content_type = content_info["content_type"].native
        if content_type != "signed_data":
            raise TimestampError(f"a time-stamp token is a CMS id-signedData, found {content_type}")
        signed_data = content_info["content"]
        encapsulated = signed_data["encap_content_info"]
        inner_type = encapsulated["content_type"].native
        if inner_type != "tst_info":
            raise TimestampError(f"a time-stamp token encapsulates id-ct-TSTInfo, found {inner_type}")
        if isinstance(encapsulated["content"], core.Void):
            raise TimestampError("the time-stamp token has no TSTInfo (a detached signature)")
        tst_info_der = bytes(encapsulated["content"])
        tst_info = tsp.TSTInfo.load(tst_info_der, strict=True)
        tst_info.native  # noqa: B018  # asn1crypto parses lazily: a malformed field fails here, not later
        signer_infos = signed_data["signer_infos"]
        # RFC 3161 §2.4.2: the token MUST NOT contain any signature other than the TSA's.
        if len(signer_infos) != 1:
            raise TimestampError(f"a time-stamp token has one SignerInfo, found {len(signer_infos)}")
        signer_info = signer_infos[0]
        signer_info.native  # noqa: B018  # see above
        certificates = tuple(
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in signed_data["certificates"] or []
            if choice.name == "certificate"
        )
    except _ASN1_ERRORS as exc:
        raise TimestampError(f"not a DER time-stamp token: {exc}") from exc
    return _Token(tst_info, tst_info_der, signer_info, certificates)


def token_certificates(token: bytes) -> tuple[x509.Certificate, ...]:
    """Every certificate the token carries (unchecked: :func:`verify_token` says which one signed it)."""
    return _parse_token(token).certificates


def token_nonce(token: bytes) -> int | None:
    """The TSTInfo's nonce, unchecked: for matching a reply to its request, not for trusting it."""
    nonce = _parse_token(token).tst_info["nonce"].native
    return None if nonce is None else int(nonce)


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _attributes(signer_info: Any) -> dict[str, Any]:
    # RFC 5652 §5.3: content-type and message-digest MUST be present, each once with one value.
    signed_attrs = signer_info["signed_attrs"]
    if isinstance(signed_attrs, core.Void) or len(signed_attrs) == 0:
        raise TimestampError("the time-stamp token's SignerInfo has no signed attributes")
    found: dict[str, Any] = {}
    for attribute in signed_attrs:
        name = attribute["type"].native
        if name in found:
            raise TimestampError(f"the signed attribute {name} appears more than once")
        if len(attribute["values"]) != 1:
            raise TimestampError(f"the signed attribute {name} has {len(attribute['values'])} values, not 1")
        found[name] = attribute["values"][0]
    for required in ("content_type", "message_digest"):
        if required not in found:
            raise TimestampError(f"the time-stamp token's signed attributes have no {required} attribute")
    return found


def _hash_name(signer_info: Any) -> str:
    name = signer_info["digest_algorithm"]["algorithm"].native
    if name not in _HASHES:
        raise TimestampError(f"the TSA signed with digest {name}; accepted: {', '.join(_HASHES)}")
    return str(name)


def _find_signer(sid: Any, pool: Sequence[x509.Certificate]) -> x509.Certificate:
    for certificate in pool:
        parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
        if sid.name == "issuer_and_serial_number":
            if (
                parsed.issuer == sid.chosen["issuer"]
                and parsed.serial_number == sid.chosen["serial_number"].native
            ):
                return certificate
        elif parsed.key_identifier is not None and parsed.key_identifier == sid.chosen.native:
            return certificate
    if sid.name == "issuer_and_serial_number":
        wanted = f"issuer {sid.chosen['issuer'].human_friendly}, serial {sid.chosen['serial_number'].native}"
    else:
        wanted = f"subjectKeyIdentifier {sid.chosen.native.hex()}"
    raise TimestampError(f"the TSA's certificate ({wanted}) is neither in the token nor among those given")


def _check_signature(certificate: x509.Certificate, signer_info: Any, hash_name: str, signed: bytes) -> None:
    algorithm = signer_info["signature_algorithm"]
    try:
        kind = algorithm.signature_algo
    except ValueError:
        kind = algorithm["algorithm"].dotted
    # sha256WithRSAEncryption and ecdsa-with-SHA256 name a hash, which must be the SignerInfo's;
    # rsaEncryption names none (the SignerInfo's digestAlgorithm is the hash, RFC 5754 §3.2).
    try:
        implied = algorithm.hash_algo
    except ValueError:
        implied = None
    if implied is not None and implied != hash_name:
        raise TimestampError(
            f"the signature algorithm uses {implied} but the SignerInfo's digest is {hash_name}"
        )
    value = bytes(signer_info["signature"].native)
    public = certificate.public_key()
    chosen = _HASHES[hash_name]()
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(public, rsa.RSAPublicKey):
            public.verify(value, signed, padding.PKCS1v15(), chosen)
        elif kind == "ecdsa" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(value, signed, ec.ECDSA(chosen))  # CMS carries the DER ECDSA-Sig-Value as is
        else:
            raise TimestampError(
                f"the TSA's signature algorithm {kind} with a {type(public).__name__} is not supported "
                "(RSA PKCS#1 v1.5 and ECDSA are)"
            )
    except InvalidSignature as exc:
        raise TimestampError(
            f"the time-stamp token's signature does not verify with the key of {_subject(certificate)}: "
            "the token was changed or that certificate is not the signer's"
        ) from exc


def _check_signing_certificate(attributes: dict[str, Any], certificate: x509.Certificate) -> None:
    der = certificate.public_bytes(serialization.Encoding.DER)
    for name in ("signing_certificate", "signing_certificate_v2"):
        if name not in attributes:
            continue
        ids = attributes[name]["certs"]
        if len(ids) == 0:
            raise TimestampError(f"the {name} attribute names no certificate")
        first = ids[0]  # RFC 5035 §5.4: the first identifies the signer's certificate
        algorithm = "sha1" if name == "signing_certificate" else first["hash_algorithm"]["algorithm"].native
        if algorithm not in ("sha1", *_HASHES):
            raise TimestampError(f"the {name} attribute hashes with {algorithm}, which is not supported")
        expected = bytes(first["cert_hash"].native)
        actual = hashlib.new(algorithm, der).digest()
        if actual != expected:
            raise TimestampError(
                f"the {name} attribute pins certificate {algorithm} {expected.hex()}, but the signer "
                f"certificate {_subject(certificate)} is {actual.hex()}"
            )
        issuer_serial = first["issuer_serial"]
        if (
            not isinstance(issuer_serial, core.Void)
            and issuer_serial["serial_number"].native != certificate.serial_number
        ):
            raise TimestampError(
                f"the {name} attribute names serial {issuer_serial['serial_number'].native}, "
                f"the signer certificate has {certificate.serial_number}"
            )


def _check_time_stamping_usage(certificate: x509.Certificate) -> None:
    # RFC 3161 §2.3: the TSA's certificate MUST carry extendedKeyUsage id-kp-timeStamping, critical.
    try:
        extension = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as exc:
        raise TimestampError(
            f"the TSA certificate {_subject(certificate)} has no extendedKeyUsage; "
            "RFC 3161 requires a critical id-kp-timeStamping"
        ) from exc
    usages = list(extension.value)
    if ExtendedKeyUsageOID.TIME_STAMPING not in usages:
        found = ", ".join(u.dotted_string for u in usages)
        raise TimestampError(
            f"the TSA certificate {_subject(certificate)} is not for time-stamping: extendedKeyUsage {found}"
        )
    if not extension.critical:
        raise TimestampError(
            f"the TSA certificate {_subject(certificate)} has extendedKeyUsage timeStamping, but not "
            "critical as RFC 3161 §2.3 requires"
        )


def _check_validity(certificate: x509.Certificate, at: dt.datetime) -> None:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not start <= at <= end:
        raise TimestampError(
            f"certificate {_subject(certificate)} is valid from {start.isoformat()} to {end.isoformat()}, "
            f"not at genTime {at.isoformat()}"
        )


def _may_issue(certificate: x509.Certificate) -> bool:
    try:
        if not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def _issuer_among(
    certificate: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)  # issuer name and signature
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _check_chain(
    signer: x509.Certificate,
    trusted: Sequence[x509.Certificate],
    pool: Sequence[x509.Certificate],
    at: dt.datetime,
) -> None:
    # Intermediates come from the token and the caller; only *trusted* ends a chain. A CA certificate
    # that the token itself carries (openssl's -chain puts the root there) is just another candidate.
    intermediates = [c for c in pool if _may_issue(c)]
    current, seen = signer, [signer]
    for _ in range(_MAX_CHAIN):
        _check_validity(current, at)
        if current in trusted:
            return
        anchor = _issuer_among(current, trusted)
        if anchor is not None:
            _check_validity(anchor, at)
            return
        issuer = _issuer_among(current, [c for c in intermediates if c not in seen])
        if issuer is None:
            break
        current = issuer
        seen.append(issuer)
    raise TimestampError(
        f"the TSA certificate {_subject(signer)} does not chain to a trusted CA "
        f"(it ends at {_subject(current)}, whose issuer {current.issuer.rfc4514_string()} is not trusted)"
    )


def _aware(name: str, value: dt.datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def verify_token(
    token: bytes,
    *,
    digest: bytes,
    trusted: Sequence[x509.Certificate],
    nonce: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
) -> TimeStamp:
    """Check that a TSA in *trusted* stamped *digest* (the SHA-256 that was sent), with *nonce* when
    given, at a genTime inside [*not_before*, *not_after*]; :class:`TimestampError` says what is wrong.

    *extra_certificates* are intermediates (or the signer's certificate) the token does not carry.
    """
    _aware("not_before", not_before)
    _aware("not_after", not_after)
    parsed = _parse_token(token)
    signer_info, tst_info = parsed.signer_info, parsed.tst_info

    # Authenticity: the signed attributes bind the TSTInfo, the signature binds the attributes.
    hash_name = _hash_name(signer_info)
    attributes = _attributes(signer_info)
    if attributes["content_type"].native != "tst_info":
        raise TimestampError(
            f"the content-type attribute is {attributes['content_type'].native}, expected id-ct-TSTInfo"
        )
    expected_digest = hashlib.new(hash_name, parsed.tst_info_der).digest()
    signed_digest = bytes(attributes["message_digest"].native)
    if signed_digest != expected_digest:
        raise TimestampError(
            f"the message-digest attribute ({hash_name} {signed_digest.hex()}) does not match the TSTInfo "
            f"({expected_digest.hex()}): the time-stamp was changed after signing"
        )
    pool = (*parsed.certificates, *extra_certificates)
    signer = _find_signer(signer_info["sid"], pool)
    signed_attrs = bytes(signer_info["signed_attrs"].dump())
    # RFC 5652 §5.4: the signature is over the attributes' DER with the SET OF tag, not the [0] of the field.
    _check_signature(signer, signer_info, hash_name, b"\x31" + signed_attrs[1:])
    _check_signing_certificate(attributes, signer)
    _check_time_stamping_usage(signer)
    gen_time: dt.datetime = tst_info["gen_time"].native.astimezone(dt.UTC)
    _check_chain(signer, trusted, pool, gen_time)

    # The contents, now that the TSA vouches for them.
    if tst_info["version"].native != "v1":
        raise TimestampError(f"TSTInfo version {tst_info['version'].native}, expected v1")
    imprint = tst_info["message_imprint"]
    imprint_algorithm = imprint["hash_algorithm"]["algorithm"].native
    stamped = bytes(imprint["hashed_message"].native)
    if imprint_algorithm != "sha256" or stamped != digest:
        raise TimestampError(
            f"a foreign time-stamp: it stamps {imprint_algorithm} {stamped.hex()}, "
            f"expected sha256 {digest.hex()}"
        )
    found_nonce = tst_info["nonce"].native
    if nonce is not None and found_nonce != nonce:
        raise TimestampError(
            f"the time-stamp's nonce is {found_nonce}, expected {nonce}: it answers another request"
        )
    if not_before is not None and gen_time < not_before:
        raise TimestampError(
            f"a stale time-stamp: genTime {gen_time.isoformat()} is before the earliest accepted, "
            f"{not_before.astimezone(dt.UTC).isoformat()}"
        )
    if not_after is not None and gen_time > not_after:
        raise TimestampError(
            f"a stale time-stamp: genTime {gen_time.isoformat()} is after the latest accepted, "
            f"{not_after.astimezone(dt.UTC).isoformat()}"
        )
    return TimeStamp(
        gen_time=gen_time,
        serial=int(tst_info["serial_number"].native),
        tsa=signer,
        certificates=parsed.certificates,
        token=token,
    )
