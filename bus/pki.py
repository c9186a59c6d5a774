"""Development PKI: a CA and one key and certificate per node of a topology.

For development and tests only: production keys come from a licensed Vietnamese CA. Private keys are
written with mode 0600 and never committed (``.gitignore`` keeps ``pki/`` out of the repository).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bus.dsig.keys import SigningKey
from bus.errors import ConfigError
from bus.topology import Topology

__all__ = ["Issued", "init_pki", "issue_certificate", "make_ca", "new_key"]


@dataclass(frozen=True, slots=True)
class Issued:
    key: SigningKey
    certificate: x509.Certificate


def new_key(kind: str = "ec") -> SigningKey:
    """``ec`` (P-256) or ``rsa`` (2048 bits)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ConfigError(f"key type {kind!r} is not supported; use 'ec' or 'rsa'")


def _name(common_name: str, organization: str, organ_id: str | None = None) -> x509.Name:
    # X.520 caps a common name at 64 (checked as UTF-8 bytes); the OrganId (UID) identifies the node.
    short = common_name.encode("utf-8")[:64].decode("utf-8", errors="ignore")
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, short),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if organ_id:
        attributes.append(x509.NameAttribute(NameOID.USER_ID, organ_id))
    return x509.Name(attributes)


def make_ca(
    common_name: str, *, kind: str = "ec", not_before: dt.datetime | None = None, days: int = 3650
) -> Issued:
    key = new_key(kind)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    name = _name(common_name, "Development PKI")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def issue_certificate(
    ca: Issued,
    common_name: str,
    organ_id: str,
    *,
    kind: str = "ec",
    organization: str = "Development PKI",
    not_before: dt.datetime | None = None,
    days: int = 825,
    is_ca: bool = False,
) -> Issued:
    """A signing certificate for *organ_id* (or an intermediate CA with *is_ca*)."""
    key = new_key(kind)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    usage = x509.KeyUsage(
        digital_signature=not is_ca,
        content_commitment=not is_ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization, organ_id))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, certificate)


def _write_private(path: Path, key: SigningKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _write_cert(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _load(directory: Path, stem: str) -> Issued | None:
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.pem"
    if not key_path.exists() or not cert_path.exists():
        return None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: not an RSA or ECDSA private key")
    return Issued(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))


def init_pki(
    topology: Topology, out: Path, *, kind: str = "ec", progress: Callable[[str], None] = print
) -> int:
    """Create ``ca.pem``/``ca.key`` and ``nodes/<OrganId>.{key,pem}`` under *out*; keeps what exists.

    Returns the number of certificates created (0 when everything was already there).
    """
    nodes = out / "nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    created = 0
    ca = _load(out, "ca")
    if ca is None:
        ca = make_ca(f"CA phát triển - {topology.province}", kind=kind)
        _write_private(out / "ca.key", ca.key)
        _write_cert(out / "ca.pem", ca.certificate)
        created += 1
        progress(f"created CA {out / 'ca.pem'}")
    members = [(topology.node.organ_id, topology.node.name)] + [
        (a.organ_id, a.name) for a in topology.agencies
    ]
    for index, (organ_id, name) in enumerate(dict(members).items(), start=1):
        stem = str(organ_id)
        if _load(nodes, stem) is not None:
            progress(f"[{index}/{len(dict(members))}] kept {stem} ({name})")
            continue
        issued = issue_certificate(ca, name, stem, kind=kind, organization=topology.province)
        _write_private(nodes / f"{stem}.key", issued.key)
        _write_cert(nodes / f"{stem}.pem", issued.certificate)
        created += 1
        progress(f"[{index}/{len(dict(members))}] created {stem} ({name})")
    return created
