"""Detached evidence signed by the bus: JSON Web Signatures (RFC 7515, flattened JSON serialization).

The audit log's checkpoints and the receipts the bus gives senders are signed as JWS, not in a format
of our own, so that anyone can check them with any JOSE library and the CA certificate: the protected
header names the algorithm (``ES256`` for the P-256 node keys, ``RS256`` for RSA) and carries the
signer's certificate chain (``x5c``, base64 DER, signer first), the payload is the exact JSON bytes that
were signed. A verifier needs nothing from the bus: the trust anchor is the province's CA certificate.

A JWS's ES256 signature is ``r || s`` of 32 bytes each (RFC 7518 §3.4), as XML-DSig's is, so the node
key signs it with :func:`bus.dsig.keys.raw_sign`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bus.dsig.keys import SigningKey, raw_sign, raw_verify
from bus.dsig.trust import TrustStore, describe
from bus.errors import CertificateError, InputError, SignatureError

__all__ = [
    "EvidenceError",
    "Signed",
    "b64url",
    "canonical_json",
    "check_node",
    "organ_id_of",
    "sign",
    "unb64url",
    "verify",
]


class EvidenceError(InputError):
    """A signed receipt, checkpoint or archive that does not check: what was expected and what was found."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"{what} is not base64url: {exc}") from exc


def canonical_json(value: Any) -> bytes:
    """The bytes the bus signs and hashes: UTF-8 JSON, keys sorted, no spaces, non-ASCII kept as is.

    A verifier never has to reproduce these bytes: records, checkpoints and receipts carry them as
    written (a JWS payload, a line of an archive), and their hashes are over exactly those bytes."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Signed:
    """A checked JWS: the payload's bytes and parsed value, and the chain that signed it."""

    payload: bytes
    value: dict[str, Any]
    chain: tuple[x509.Certificate, ...]

    @property
    def signer(self) -> x509.Certificate:
        return self.chain[0]


def organ_id_of(certificate: x509.Certificate) -> str | None:
    """The OrganId a certificate names (its UID attribute), the identity of a node or an agency."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None


def check_node(signed: Signed, node: str | None) -> None:
    """A payload says which node signed it (``node``): its certificate must name that OrganId, and, when
    *node* is given (the bus node the verifier expects), be that node's. Any certificate of the CA (an
    agency's too) makes a valid signature: this is what tells the bus's evidence from an agency's."""
    claimed = signed.value.get("node")
    actual = organ_id_of(signed.signer)
    if claimed != actual:
        raise EvidenceError(f"it says node {claimed!r} signed it, but the certificate is {actual!r}'s")
    if node is not None and actual != node:
        raise EvidenceError(f"signed by {actual!r}, not by the bus node {node!r}")


def sign(payload: bytes, key: SigningKey, chain: Sequence[x509.Certificate]) -> dict[str, str]:
    """The flattened JWS of *payload*: ``{"protected", "payload", "signature"}``."""
    header = {
        "alg": "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256",
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain],
    }
    protected = b64url(canonical_json(header))
    body = b64url(payload)
    signature = raw_sign(key, f"{protected}.{body}".encode("ascii"))
    return {"protected": protected, "payload": body, "signature": b64url(signature)}


def verify(jws: Any, trust: TrustStore, *, at: dt.datetime | None = None) -> Signed:
    """Check *jws* (a flattened JWS as parsed JSON): the signature with the first certificate of its
    ``x5c``, that certificate's chain to an anchor of *trust* at *at* (the signing time the payload
    claims; now when None), and that the payload is a JSON object. :class:`EvidenceError` otherwise."""
    if not isinstance(jws, dict) or not all(isinstance(jws.get(k), str) for k in ("protected", "payload")):
        raise EvidenceError("not a JWS in flattened JSON form: 'protected', 'payload' and 'signature' needed")
    if not isinstance(jws.get("signature"), str):
        raise EvidenceError("the JWS has no 'signature'")
    try:
        header = json.loads(unb64url(jws["protected"], "the protected header"))
    except ValueError as exc:
        raise EvidenceError(f"the JWS's protected header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise EvidenceError("the JWS's protected header is not a JSON object")
    alg = header.get("alg")
    if alg not in ("ES256", "RS256"):
        raise EvidenceError(f"JWS algorithm {alg!r} is not accepted; ES256 or RS256 expected")
    encoded = header.get("x5c")
    if not isinstance(encoded, list) or not encoded or not all(isinstance(c, str) for c in encoded):
        raise EvidenceError("the JWS names no signer: its header has no 'x5c' certificate chain")
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in encoded]
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"a certificate of the JWS's x5c cannot be read: {exc}") from exc
    key = chain[0].public_key()
    if alg == "ES256" and not (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        raise EvidenceError("ES256 needs a P-256 key; the signer's certificate holds another")
    payload = unb64url(jws["payload"], "the payload")
    signature = unb64url(jws["signature"], "the signature")
    signing_input = f"{jws['protected']}.{jws['payload']}".encode("ascii")
    try:
        raw_verify(chain[0], "rsa" if alg == "RS256" else "ec", "sha256", signature, signing_input)
    except SignatureError as exc:
        raise EvidenceError(
            f"the signature does not match the payload for {describe(chain[0])}: the payload was "
            "changed, or it was not signed by this certificate's key"
        ) from exc
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise EvidenceError(f"the signed payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise EvidenceError("the signed payload is not a JSON object")
    try:
        validated = trust.validate(chain[0], chain[1:], at or dt.datetime.now(dt.UTC))
    except CertificateError as exc:
        raise EvidenceError(f"the signer is not trusted: {exc}") from exc
    return Signed(payload, value, validated)
