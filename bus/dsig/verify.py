"""Verifying envelope signatures; the result says *what was signed*, and later code uses only that.

Every structural rule below closes a known attack on XML-DSig:

* the signature must be a child of ``edXMLHeader`` (a signature elsewhere is a wrapping attempt);
* exactly one ``Reference``, with ``URI=""``: no ID-based references, so no ID wrapping;
* transforms, canonicalisation, digest and signature methods from a short allow-list; the XPath
  filter must be the profile's, with the profile's namespace bindings (:mod:`bus.dsig.profile`);
* the certificate that checks the value must chain to the trust store and be valid now;
* nothing inside ``ds:Signature`` but the profile's own elements: the signature is left out of what
  it signs, so a ``ds:Object`` holding a second ``MessageHeader`` would be unsigned content that a
  recipient's ``//Subject`` finds (issue 10).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from lxml import etree

from bus.checks import NS, sender_text, unsigned_markup
from bus.dsig.keys import raw_verify
from bus.dsig.profile import (
    C14N,
    DIGESTS,
    DSIG_NS,
    ENVELOPED,
    EXC_C14N,
    FILTER2,
    FILTER2_NS,
    SIGNATURE_METHODS,
    SUBTRACT_EXPRESSION,
    SUBTRACT_NSMAP,
    SignatureConfig,
)
from bus.dsig.transform import signed_bytes, signed_digest
from bus.dsig.trust import TrustStore, describe
from bus.errors import EnvelopeInvalidError, SignatureError, SignatureMissingError, WeakAlgorithmError

__all__ = ["VerifiedSignature", "find_signatures", "verify_signature", "verify_tree"]

_DEFAULT_CONFIG = SignatureConfig()


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A signature that checked out.

    ``covers_trace`` is False for the bus profile, whose signers leave trace headers and other
    signatures out. The digest was computed by streaming the canonical form into the hash; the bytes
    themselves are not kept (a 100 MB envelope would be 100 MB more): :attr:`signed_xml` computes them
    again on request, for tools.
    """

    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signature_method: str
    digest_method: str
    covers_trace: bool
    # What the signature was checked on, for signed_xml.
    root: etree._Element = field(repr=False, compare=False)
    signature: etree._Element = field(repr=False, compare=False)
    exclusive: bool = field(repr=False, compare=False)

    @property
    def signer_name(self) -> str:
        return describe(self.signer)

    @property
    def signed_xml(self) -> bytes:
        """The canonical XML the signer vouched for, computed from the tree as it is now: read it
        before the tree is changed (a trace header added after it shows in a whole-document
        signature's bytes). The intake does not use it (bus/intake_checks.py says why)."""
        subtract = not self.covers_trace
        return signed_bytes(self.root, self.signature, subtract=subtract, exclusive=self.exclusive)


def _q(name: str) -> str:
    return f"{{{DSIG_NS}}}{name}"


def _only(parent: etree._Element, name: str) -> etree._Element:
    found = parent.findall(_q(name))
    if len(found) != 1:
        raise SignatureError(
            f"ds:{etree.QName(parent).localname} must hold exactly one ds:{name}, has {len(found)}"
        )
    return found[0]


def find_signatures(root: etree._Element) -> list[etree._Element]:
    """The ``ds:Signature`` children of ``edXMLHeader``; a ``ds:Signature`` anywhere else is refused."""
    header = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader")
    everywhere = list(root.iter(_q("Signature")))
    placed = [s for s in everywhere if header is not None and s.getparent() is header]
    if len(placed) != len(everywhere):
        stray = next(s for s in everywhere if s not in placed)
        raise SignatureError(
            f"ds:Signature at line {stray.sourceline} is not a child of edXMLHeader: "
            "signatures elsewhere are refused (possible signature wrapping)"
        )
    return placed


_DSIG11_NS = "http://www.w3.org/2009/xmldsig11#"
_XADES_NS = ("http://uri.etsi.org/01903/v1.3.2#", "http://uri.etsi.org/01903/v1.4.1#")


def _ds(*names: str) -> frozenset[str]:
    return frozenset(f"{{{DSIG_NS}}}{name}" for name in names)


# What each element of a ds:Signature may hold (XML-DSig's schema, narrowed to what signers write):
# the signature is left out of what it signs, so anything else there is content nobody signed that a
# recipient could read (a second SignedInfo with a decoy DigestValue, a MessageHeader in a ds:Object).
_CHILDREN: dict[str, frozenset[str]] = {
    f"{{{DSIG_NS}}}Signature": _ds("SignedInfo", "SignatureValue", "KeyInfo", "Object"),
    f"{{{DSIG_NS}}}SignedInfo": _ds("CanonicalizationMethod", "SignatureMethod", "Reference"),
    f"{{{DSIG_NS}}}CanonicalizationMethod": frozenset({f"{{{EXC_C14N}}}InclusiveNamespaces"}),
    f"{{{DSIG_NS}}}SignatureMethod": frozenset(),
    f"{{{DSIG_NS}}}Reference": _ds("Transforms", "DigestMethod", "DigestValue"),
    f"{{{DSIG_NS}}}Transforms": _ds("Transform"),
    f"{{{DSIG_NS}}}Transform": frozenset({f"{{{FILTER2_NS}}}XPath", f"{{{EXC_C14N}}}InclusiveNamespaces"}),
    f"{{{FILTER2_NS}}}XPath": frozenset(),
    f"{{{EXC_C14N}}}InclusiveNamespaces": frozenset(),
    f"{{{DSIG_NS}}}DigestMethod": frozenset(),
    f"{{{DSIG_NS}}}DigestValue": frozenset(),
    f"{{{DSIG_NS}}}SignatureValue": frozenset(),
    f"{{{DSIG_NS}}}KeyInfo": _ds("X509Data", "KeyName", "KeyValue"),
    f"{{{DSIG_NS}}}KeyName": frozenset(),
    f"{{{DSIG_NS}}}KeyValue": _ds("RSAKeyValue") | {f"{{{_DSIG11_NS}}}ECKeyValue"},
    f"{{{DSIG_NS}}}RSAKeyValue": _ds("Modulus", "Exponent"),
    f"{{{DSIG_NS}}}Modulus": frozenset(),
    f"{{{DSIG_NS}}}Exponent": frozenset(),
    f"{{{_DSIG11_NS}}}ECKeyValue": frozenset({f"{{{_DSIG11_NS}}}NamedCurve", f"{{{_DSIG11_NS}}}PublicKey"}),
    f"{{{_DSIG11_NS}}}NamedCurve": frozenset(),
    f"{{{_DSIG11_NS}}}PublicKey": frozenset(),
    f"{{{DSIG_NS}}}X509Data": _ds(
        "X509Certificate", "X509IssuerSerial", "X509SubjectName", "X509SKI", "X509CRL"
    ),
    f"{{{DSIG_NS}}}X509IssuerSerial": _ds("X509IssuerName", "X509SerialNumber"),
    f"{{{DSIG_NS}}}X509IssuerName": frozenset(),
    f"{{{DSIG_NS}}}X509SerialNumber": frozenset(),
    f"{{{DSIG_NS}}}X509Certificate": frozenset(),
    f"{{{DSIG_NS}}}X509SubjectName": frozenset(),
    f"{{{DSIG_NS}}}X509SKI": frozenset(),
    f"{{{DSIG_NS}}}X509CRL": frozenset(),
    # Signing tools put signing properties here: XAdES QualifyingProperties (signing time, signing
    # certificate) or ds:SignatureProperties. Their insides are not edXML (checked below).
    f"{{{DSIG_NS}}}Object": _ds("SignatureProperties")
    | {f"{{{ns}}}QualifyingProperties" for ns in _XADES_NS},
    f"{{{DSIG_NS}}}SignatureProperties": _ds("SignatureProperty"),
}
_ONCE = _ds("SignedInfo", "SignatureValue", "KeyInfo", "CanonicalizationMethod", "SignatureMethod")
_FREE = _ds("SignatureProperty") | {f"{{{ns}}}QualifyingProperties" for ns in _XADES_NS}


def _refuse(element: etree._Element, why: str) -> SignatureError:
    name = etree.QName(element)
    shown = f"ds:{name.localname}" if name.namespace == DSIG_NS else name.text
    return SignatureError(
        f"{shown} at line {element.sourceline} inside ds:Signature is refused: {why}; a signature does "
        "not cover its own content, so a recipient could read it as part of the envelope though "
        "nobody signed it"
    )


def _only_profile_elements(element: etree._Element) -> None:
    """Every element of a ds:Signature where XML-DSig puts it, SignedInfo and its kind once; signing
    properties (XAdES, SignatureProperty) hold no edXML element."""
    if element.tag in _FREE:
        stray = next((e for e in element.iter(f"{{{NS}}}*")), None)
        if stray is not None:
            raise _refuse(stray, "edXML content in signing properties")
        return
    allowed = _CHILDREN.get(element.tag) if isinstance(element.tag, str) else None
    if allowed is None:
        raise _refuse(element, "not an element of the signature profile")
    seen: set[str] = set()
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments and PIs: refused for the whole envelope (unsigned_markup)
        if child.tag not in allowed:
            raise _refuse(child, f"not allowed in {etree.QName(element).localname}")
        if child.tag in _ONCE and child.tag in seen:
            raise _refuse(child, "a second one")
        seen.add(child.tag)
        _only_profile_elements(child)


def _transforms(reference: etree._Element) -> tuple[bool, bool]:
    """(subtract, exclusive) for an allowed transform chain, else :class:`SignatureError`."""
    holder = reference.findall(_q("Transforms"))
    steps = [] if not holder else list(holder[0])
    algorithms = [step.get("Algorithm") for step in steps]
    if algorithms == [ENVELOPED, FILTER2, EXC_C14N]:
        xpaths = list(steps[1])
        if (
            len(xpaths) != 1
            or xpaths[0].tag != f"{{{FILTER2_NS}}}XPath"
            or xpaths[0].get("Filter") != "subtract"
        ):
            raise SignatureError(
                "the XPath filter transform must hold one dsig-xpath:XPath with Filter='subtract'"
            )
        xpath = xpaths[0]
        bindings_ok = all(xpath.nsmap.get(prefix) == uri for prefix, uri in SUBTRACT_NSMAP.items())
        if " ".join((xpath.text or "").split()) != SUBTRACT_EXPRESSION or not bindings_ok:
            raise SignatureError(
                "the XPath filter is not the bus profile's (only trace headers and "
                "signatures may be left out of what is signed)"
            )
        return True, True
    if algorithms in ([ENVELOPED], [ENVELOPED, EXC_C14N]):
        return False, algorithms == [ENVELOPED, EXC_C14N]
    raise SignatureError(
        f"transform chain {algorithms} is not accepted; expected enveloped-signature "
        "[+ the bus XPath filter] + exclusive c14n"
    )


def _decode(element: etree._Element, what: str) -> bytes:
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{what} is not valid base64") from exc


def _certificates(signature: etree._Element, config: SignatureConfig) -> list[x509.Certificate]:
    elements = signature.findall(f"{_q('KeyInfo')}/{_q('X509Data')}/{_q('X509Certificate')}")
    if not elements:
        raise SignatureError("ds:KeyInfo carries no ds:X509Certificate: the signer cannot be identified")
    if len(elements) > config.max_certificates:
        raise SignatureError(
            f"ds:KeyInfo carries {len(elements)} certificates; at most {config.max_certificates}"
        )
    return [_load_certificate(_decode(element, "X509Certificate")) for element in elements]


def _load_certificate(der: bytes) -> x509.Certificate:
    """Parse every field now: cryptography parses some lazily, and a corrupt one must fail here as a
    :class:`SignatureError`, not later inside chain validation as a ValueError."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = (
            certificate.version,
            certificate.subject.rfc4514_string(),
            certificate.issuer.rfc4514_string(),
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
            list(certificate.extensions),
            certificate.public_key(),
            certificate.signature_hash_algorithm,
        )
    except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise SignatureError(
            f"X509Certificate cannot be read (truncated, corrupt or unsupported): {exc}"
        ) from exc
    return certificate


def verify_signature(
    root: etree._Element,
    signature: etree._Element,
    trust: TrustStore,
    config: SignatureConfig = _DEFAULT_CONFIG,
    *,
    now: dt.datetime | None = None,
) -> VerifiedSignature:
    """Check one ``ds:Signature`` of *root*; raises a :class:`SignatureError` subclass if it fails."""
    _only_profile_elements(signature)
    signed_info = _only(signature, "SignedInfo")
    c14n = _only(signed_info, "CanonicalizationMethod").get("Algorithm")
    if c14n not in (EXC_C14N, C14N):
        raise SignatureError(f"CanonicalizationMethod {c14n!r} is not accepted")
    method = _only(signed_info, "SignatureMethod").get("Algorithm") or ""
    reference = _only(signed_info, "Reference")
    if reference.get("URI") != "":
        raise SignatureError(
            f'Reference URI={reference.get("URI")!r} is refused: only URI="" (the whole '
            "envelope) is accepted, so no part can be swapped in by ID"
        )
    digest_method = _only(reference, "DigestMethod").get("Algorithm") or ""
    if method not in SIGNATURE_METHODS or digest_method not in DIGESTS:
        raise SignatureError(f"algorithms {method!r} / {digest_method!r} are not accepted")
    key_type, hash_name, weak_method = SIGNATURE_METHODS[method]
    digest_name, weak_digest = DIGESTS[digest_method]
    if (weak_method or weak_digest) and not config.allows_sha1(sender_text(root)):
        raise WeakAlgorithmError(
            f"SHA-1 signature from {sender_text(root)} refused: SHA-1 is broken; an operator "
            "may allow it for a named legacy sender (--allow-sha1)"
        )
    subtract, exclusive = _transforms(reference)
    certificates = _certificates(signature, config)
    chain = trust.validate(certificates[0], certificates[1:], now or dt.datetime.now(dt.UTC))
    digest = signed_digest(root, signature, subtract=subtract, exclusive=exclusive, hash_name=digest_name)
    if digest != _decode(_only(reference, "DigestValue"), "DigestValue"):
        raise SignatureError("DigestValue does not match: the envelope was changed after it was signed")
    canonical = etree.tostring(signed_info, method="c14n", exclusive=c14n == EXC_C14N, with_comments=False)
    raw_verify(
        certificates[0],
        key_type,
        hash_name,
        _decode(_only(signature, "SignatureValue"), "SignatureValue"),
        canonical,
    )
    return VerifiedSignature(
        certificates[0],
        chain,
        method,
        digest_method,
        covers_trace=not subtract,
        root=root,
        signature=signature,
        exclusive=exclusive,
    )


def verify_tree(
    tree: etree._ElementTree,
    trust: TrustStore,
    config: SignatureConfig = _DEFAULT_CONFIG,
    *,
    now: dt.datetime | None = None,
) -> list[VerifiedSignature]:
    """Verify every signature of *tree* (the sender's first); at least one is required.

    An envelope with comments or processing instructions is refused first: c14n leaves them out of
    what a signature covers, so the signature would vouch for text a reader sees otherwise."""
    root = tree.getroot()
    problems = unsigned_markup(root)
    if problems:
        raise EnvelopeInvalidError(problems)
    signatures = find_signatures(root)
    if not signatures:
        legacy = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}Signature")
        hint = (
            (
                " (its Signature element is in the edXML namespace, not xmldsig: a placeholder the bus "
                "cannot check)"
            )
            if legacy is not None
            else ""
        )
        raise SignatureMissingError(f"envelope has no ds:Signature{hint}")
    return [verify_signature(root, s, trust, config, now=now) for s in signatures]
