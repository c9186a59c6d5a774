"""Private keys and certificates as the signature code needs them (RSA-2048+ and ECDSA P-256)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from bus.errors import ConfigError, SignatureError

__all__ = [
    "SigningKey",
    "load_certificates",
    "load_private_key",
    "raw_sign",
    "raw_verify",
    "signature_method_for",
]

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_P256_BYTES = 32


def load_private_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read a private key from {path}: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError(f"{path}: only RSA keys of 2048 bits or more and ECDSA P-256 keys can sign")


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificates from {path}: {exc}") from exc
    return certificates


def signature_method_for(key: SigningKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    return "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"


def raw_sign(key: SigningKey, data: bytes) -> bytes:
    """SignatureValue bytes; ECDSA as r||s of fixed width, as XML-DSig wants (RFC 4050 §3.3)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


def raw_verify(
    certificate: x509.Certificate, key_type: str, hash_name: str, value: bytes, data: bytes
) -> None:
    """Check *value* over *data* with the certificate's public key; :class:`SignatureError` if wrong."""
    public = certificate.public_key()
    algorithm = _HASHES[hash_name]()
    try:
        if key_type == "rsa" and isinstance(public, rsa.RSAPublicKey):
            public.verify(value, data, padding.PKCS1v15(), algorithm)
            return
        if key_type == "ec" and isinstance(public, ec.EllipticCurvePublicKey):
            width = (public.curve.key_size + 7) // 8
            if len(value) != 2 * width:
                raise SignatureError(f"ECDSA SignatureValue has {len(value)} bytes; expected {2 * width}")
            r, s = int.from_bytes(value[:width], "big"), int.from_bytes(value[width:], "big")
            public.verify(encode_dss_signature(r, s), data, ec.ECDSA(algorithm))
            return
    except InvalidSignature as exc:
        raise SignatureError(
            "SignatureValue does not match: the signed header was changed, "
            "or the certificate is not the signer's"
        ) from exc
    raise SignatureError(
        f"the signature method needs a {key_type.upper()} key, but the certificate holds another"
    )
