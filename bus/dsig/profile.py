"""What a bus signature looks like, and what a verifier accepts (docs/signatures.md).

A signature is an enveloped XML-DSig ``ds:Signature``, a child of ``edXMLHeader`` after
``TraceHeaderList`` (where real producers put theirs), with one ``Reference URI=""``: the whole
document. Two transform chains are accepted, nothing else:

``TRACE_TOLERANT`` (what the bus writes): enveloped-signature, then an XPath Filter 2.0 ``subtract``
of the trace headers and of every signature in ``edXMLHeader``, then exclusive c14n. Each axis the
envelope passes appends a ``TraceHeader`` and may add its own signature; neither breaks the sender's.
``Bussiness``, which also lives in ``TraceHeaderList``, stays signed: a forged revocation must fail.

``WHOLE_DOCUMENT``: enveloped-signature (+ exclusive c14n), as generic tools sign. It verifies until
the first hop appends a trace header.

The filter expression is compared with ours, never evaluated as given: a signature that chose its own
XPath could subtract the very content it claims to sign.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.checks import NS as EDXML_NS

__all__ = [
    "C14N",
    "DIGESTS",
    "DSIG_NS",
    "ENVELOPED",
    "EXC_C14N",
    "FILTER2",
    "FILTER2_NS",
    "SIGNATURE_METHODS",
    "SUBTRACT_EXPRESSION",
    "SUBTRACT_NSMAP",
    "SignatureConfig",
]

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
FILTER2_NS = "http://www.w3.org/2002/06/xmldsig-filter2"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
FILTER2 = FILTER2_NS

# digest URI -> (hashlib/cryptography name, is_weak)
DIGESTS = {
    "http://www.w3.org/2001/04/xmlenc#sha256": ("sha256", False),
    "http://www.w3.org/2000/09/xmldsig#sha1": ("sha1", True),
}
# signature URI -> (key type, hash name, is_weak)
SIGNATURE_METHODS = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", "sha256", False),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", "sha256", False),
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", "sha1", True),
}

_HEADER = "/edXML:edXML/edXML:edXMLEnvelope/edXML:edXMLHeader"
SUBTRACT_EXPRESSION = f"{_HEADER}/edXML:TraceHeaderList/edXML:TraceHeader | {_HEADER}/ds:Signature"
SUBTRACT_NSMAP = {"edXML": EDXML_NS, "ds": DSIG_NS}


@dataclass(frozen=True, slots=True)
class SignatureConfig:
    """Verification policy; the defaults are the safe ones.

    ``sha1_senders``: OrganIds (canonical text) of legacy senders whose SHA-1 signatures are accepted.
    SHA-1 collisions are practical (SHAttered, 2017): every entry is a sender whose signatures could
    be forged by someone able to compute one. Empty by default.
    ``max_certificates``: KeyInfo certificates read at most (a long chain is a CPU attack).
    """

    sha1_senders: frozenset[str] = field(default_factory=frozenset)
    max_certificates: int = 5

    def allows_sha1(self, sender: str | None) -> bool:
        return sender is not None and sender in self.sha1_senders
