"""XML signatures of edXML envelopes: sign, verify, trust. See :mod:`bus.dsig.profile`."""

from bus.dsig.keys import SigningKey, load_certificates, load_private_key
from bus.dsig.profile import SignatureConfig
from bus.dsig.revocation import CrlRegistry, CrlSource, RevocationPolicy
from bus.dsig.sign import ensure_trace_list, sign_tree, signature_template
from bus.dsig.trust import TrustStore
from bus.dsig.verify import VerifiedSignature, find_signatures, verify_signature, verify_tree

__all__ = [
    "CrlRegistry",
    "CrlSource",
    "RevocationPolicy",
    "SignatureConfig",
    "SigningKey",
    "TrustStore",
    "VerifiedSignature",
    "ensure_trace_list",
    "find_signatures",
    "load_certificates",
    "load_private_key",
    "sign_tree",
    "signature_template",
    "verify_signature",
    "verify_tree",
]
