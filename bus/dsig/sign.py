"""Signing an envelope with the bus profile (:mod:`bus.dsig.profile`)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from bus.checks import NS
from bus.dsig.keys import SigningKey, raw_sign, signature_method_for
from bus.dsig.profile import DSIG_NS, ENVELOPED, EXC_C14N, FILTER2, FILTER2_NS, SUBTRACT_EXPRESSION
from bus.dsig.transform import signed_digest
from bus.errors import EnvelopeInvalidError, Problem

__all__ = ["ensure_trace_list", "sign_tree", "signature_template"]

_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


def _ds(parent: etree._Element, name: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{DSIG_NS}}}{name}", attrib)


def _part(parent: etree._Element, path: str) -> etree._Element:
    """A part of our own signature template (always present: we built it)."""
    found = parent.find("/".join(f"{{{DSIG_NS}}}{step}" for step in path.split("/")))
    if found is None:
        raise LookupError(f"signature template lacks {path}")
    return found


def header_of(root: etree._Element) -> etree._Element:
    header = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader")
    if header is None:
        raise EnvelopeInvalidError(
            [
                Problem(
                    "missing",
                    "/edXML/edXMLEnvelope/edXMLHeader",
                    "edXMLHeader is required to sign an envelope",
                )
            ]
        )
    return header


def ensure_trace_list(root: etree._Element) -> etree._Element:
    """The ``TraceHeaderList``, created right after ``MessageHeader`` when missing.

    It must exist before signing: trace headers are subtracted from what is signed, the list that
    holds them is not, so a list created after signing would break the signature.
    """
    header = header_of(root)
    found = header.find(f"{{{NS}}}TraceHeaderList")
    if found is not None:
        return found
    message = header.find(f"{{{NS}}}MessageHeader")
    trace_list = etree.Element(f"{{{NS}}}TraceHeaderList")
    if message is None:
        header.insert(0, trace_list)
    else:
        message.addnext(trace_list)
        trace_list.tail, message.tail = message.tail, message.tail
    return trace_list


def signature_template(method: str, digest: str = _SHA256) -> etree._Element:
    """An empty ``ds:Signature`` of the bus profile (also what xmlsec1 fills in the interop test)."""
    signature = etree.Element(f"{{{DSIG_NS}}}Signature", nsmap={"ds": DSIG_NS})
    signed_info = _ds(signature, "SignedInfo")
    _ds(signed_info, "CanonicalizationMethod", Algorithm=EXC_C14N)
    _ds(signed_info, "SignatureMethod", Algorithm=method)
    reference = _ds(signed_info, "Reference", URI="")
    transforms = _ds(reference, "Transforms")
    _ds(transforms, "Transform", Algorithm=ENVELOPED)
    xpath_transform = _ds(transforms, "Transform", Algorithm=FILTER2)
    xpath = etree.SubElement(
        xpath_transform,
        f"{{{FILTER2_NS}}}XPath",
        {"Filter": "subtract"},
        nsmap={"dsig-xpath": FILTER2_NS, "edXML": NS, "ds": DSIG_NS},
    )
    xpath.text = SUBTRACT_EXPRESSION
    _ds(transforms, "Transform", Algorithm=EXC_C14N)
    _ds(reference, "DigestMethod", Algorithm=digest)
    _ds(reference, "DigestValue")
    _ds(signature, "SignatureValue")
    _ds(_ds(signature, "KeyInfo"), "X509Data")
    return signature


def sign_tree(
    tree: etree._ElementTree,
    key: SigningKey,
    certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate] = (),
) -> etree._Element:
    """Add a bus-profile signature to *tree* in place (after any existing one); returns it."""
    root = tree.getroot()
    ensure_trace_list(root)
    header = header_of(root)
    signature = signature_template(signature_method_for(key))
    x509_data = _part(signature, "KeyInfo/X509Data")
    for cert in (certificate, *intermediates):
        der = cert.public_bytes(serialization.Encoding.DER)
        _ds(x509_data, "X509Certificate").text = base64.b64encode(der).decode("ascii")
    # No tail: the text between header children must stay exactly as signed by earlier signers.
    header.append(signature)
    digest = signed_digest(root, signature, subtract=True, exclusive=True, hash_name="sha256")
    signed_info = _part(signature, "SignedInfo")
    _part(signed_info, "Reference/DigestValue").text = base64.b64encode(digest).decode("ascii")
    canonical = etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)
    _part(signature, "SignatureValue").text = base64.b64encode(raw_sign(key, canonical)).decode("ascii")
    return signature
