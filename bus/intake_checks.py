"""The intake's checks of one envelope: who sent it and who signed it, and how many copies it may make.

From an agency (:meth:`IntakeChecks.checked`): the envelope's ``From`` is the authenticated sender, and
every signature is verified whenever there is one (required where the agency's policy says so), the
first being provably the sender's, and what is read is what was signed. From the national axis
(:meth:`IntakeChecks.checked_from_axis`): the sender is outside the province, and its signature checks
against the CAs of other provinces and ministries. Then the fan-out bounds and the codes of this
province that no agency has. :class:`IntakePolicy` says what is required; :mod:`bus.intake` runs them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from lxml import etree

from bus.checks import VN_TZ
from bus.dsig import SignatureConfig, TrustStore, find_signatures, verify_tree
from bus.envelope import ParsedEnvelope, check_tree
from bus.errors import EnvelopeInvalidError, ForgedSenderError, Problem, SignatureError
from bus.model import DocumentEnvelope, StatusMessage
from bus.organ_id import OrganId
from bus.routing import Destination, DestinationKind
from bus.topology import Topology
from bus.xmlparse import DEFAULT_LIMITS, XmlLimits

__all__ = ["IntakeChecks", "IntakePolicy"]

# Parsed and checked once (issue 12, item 3). The model is read from the received tree, before the
# signatures are verified, and never again from "what was signed": with the profile's rules enforced,
# the two are the same content. What a verified signature leaves out of its digest is exactly
#   * the ds:Signature elements of edXMLHeader (only there: find_signatures refuses one elsewhere),
#     and inside them nothing but the profile's own elements (verify._only_profile_elements refuses a
#     ds:Object holding edXML, a second SignedInfo, anything foreign);
#   * with the bus profile, the TraceHeader elements of TraceHeaderList: the filter is compared with
#     the profile's own expression, never evaluated as sent (verify._transforms), so no signer can
#     subtract anything else; the reader takes the hops from there as information, never a decision;
#   * comments and processing instructions, which exclusive c14n drops: refused anywhere in the
#     envelope, around its root too (checks.unsigned_markup, in check_tree and again in verify_tree).
# No DTD reaches the parser (xmlparse), so no default attribute or entity adds content either. Every
# element, attribute and text node the reader can see is therefore inside the digest, and reading the
# canonical bytes again (as this module did until issue 12) parsed and checked each envelope twice to
# learn nothing new. The digest itself is computed by streaming c14n into the hash (dsig/transform.py).


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    """``signed_senders``: agencies whose envelopes must carry a valid signature (canonical OrganIds)."""

    trust: TrustStore | None = None
    signed_senders: frozenset[str] = field(default_factory=frozenset)
    # Agencies whose signing certificate is pinned: canonical OrganId -> SHA-256 of the DER certificate.
    pinned: Mapping[str, bytes] = field(default_factory=dict)
    signatures: SignatureConfig = field(default_factory=SignatureConfig)
    limits: XmlLimits = DEFAULT_LIMITS
    # Envelopes relayed in from the national axis: the CAs of other provinces and ministries, and
    # whether such an envelope must carry a signature that checks against them.
    axis_trust: TrustStore | None = None
    axis_require_signature: bool = True
    # Other provinces' axes (their node OrganIds) whose signature vouches for a sender of their own
    # body: they authenticated the sender before signing. Anyone else must be signed by the sender.
    trusted_axes: frozenset[str] = frozenset()
    # Recipients (To) one document may name: each is a copy to keep and deliver, so an unbounded list
    # is an amplification attack (one 213 KB envelope to 2,000 codes made 430 MB of copies).
    max_recipients: int = 500
    # ... and bytes: copies x envelope size (a 64 MiB envelope to 500 recipients would be 32 GiB).
    max_fanout_bytes: int = 1024**3


class IntakeChecks:
    """The checks of :class:`IntakePolicy` for the axis node *node_id* of *topology*."""

    def __init__(
        self,
        topology: Topology,
        node_id: OrganId,
        policy: IntakePolicy,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._topology = topology
        self._node_id = node_id
        self._policy = policy
        self._clock = clock

    def checked(self, tree: etree._ElementTree, sender: OrganId) -> ParsedEnvelope:
        """The envelope of *tree* (parsed once, by the intake) from the authenticated *sender*."""
        parsed = check_tree(tree, today=self._clock().astimezone(VN_TZ).date())
        claimed = parsed.message.sender.organ_id
        if claimed != sender:
            raise ForgedSenderError(
                f"envelope says From/OrganId {claimed}, but the request was authenticated "
                f"as {sender}: an agency may only send as itself"
            )
        required = str(sender) in self._policy.signed_senders
        if not required and not find_signatures(tree.getroot()):
            return parsed
        # A signature is checked whenever there is one: the bus countersigns what it forwards, and
        # must not vouch for a signature nobody checked (a rogue CA's, say) because the sender was
        # not obliged to sign.
        if self._policy.trust is None:
            raise SignatureError(
                f"the envelope from {sender} carries a signature and this node trusts no CA to check it "
                "against (node.trust): send it unsigned, or ask the operator to configure the CA"
                if not required
                else f"{sender} must sign, and this node has no trust store configured (node.trust)"
            )
        verified = verify_tree(tree, self._policy.trust, self._policy.signatures)
        self._check_signer(verified[0].signer, sender, required=required)
        # The model read above is what the sender signed: see "Parsed and checked once" above.
        return parsed

    def _check_signer(self, signer: x509.Certificate, sender: OrganId, *, required: bool) -> None:
        """The first signature must be the sender's: its pinned certificate, or one whose UID names it
        (or one of its former codes). A UID naming another agency is a forgery. A certificate whose UID
        names no agency (none, or a person's CMND/CCCD/MST) proves nothing about which agency signed,
        so it cannot meet a "must sign" policy; from an agency that need not sign it is let through."""
        pin = self._policy.pinned.get(str(sender))
        if pin is not None:
            if signer.fingerprint(hashes.SHA256()) != pin:
                raise ForgedSenderError(f"the envelope is signed with a certificate that is not {sender}'s")
            return
        uids = [str(a.value) for a in signer.subject.get_attributes_for_oid(NameOID.USER_ID)]
        organs = [str(organ) for organ in map(_organ_or_none, uids) if organ is not None]
        codes = self.codes(sender)
        others = [organ for organ in organs if organ not in codes]
        if others:
            raise ForgedSenderError(f"the envelope is signed by {others[0]}, not by {sender} that sends it")
        if required and not organs:
            named = f"names UID {', '.join(uids)}, no OrganId" if uids else "names no UID (OrganId)"
            raise ForgedSenderError(
                f"{sender} must sign its envelopes, and the signing certificate {named}: it does not "
                f"prove that {sender} signed; sign with the agency's certificate, or pin it "
                "(agencies[].certificate)"
            )

    def checked_from_axis(self, tree: etree._ElementTree) -> ParsedEnvelope:
        """The envelope of *tree* (parsed once, by the intake) that the national axis delivered."""
        parsed = check_tree(tree, today=self._clock().astimezone(VN_TZ).date())
        sender = parsed.message.sender.organ_id
        if self._topology.agency(sender) is not None or sender.top == self._node_id.top:
            raise ForgedSenderError(
                f"an envelope from the national axis names {sender}, a unit of this province, as its "
                "sender: this province's units send through this bus, not through the national axis"
            )
        required = self._policy.axis_require_signature
        if not required and not find_signatures(tree.getroot()):
            return parsed
        if self._policy.axis_trust is None:
            raise SignatureError(
                "envelopes from the national axis must be signed, and no CA is trusted (national_axis.trust)"
                if required
                else f"the envelope from {sender} carries a signature, and no CA of other provinces "
                "and ministries is trusted to check it (national_axis.trust)"
            )
        verified = verify_tree(tree, self._policy.axis_trust, self._policy.signatures)
        if required and not any(self._vouches_for(v.signer, sender) for v in verified):
            signers = ", ".join(_uid(v.signer) or "(no UID)" for v in verified)
            raise ForgedSenderError(
                f"the envelope from {sender} is signed by {signers}: neither the sender itself nor a "
                "trusted axis of the sender's own body (national_axis.trusted_axes)"
            )
        # The model read above is what was signed: see "Parsed and checked once" above.
        return parsed

    def _vouches_for(self, signer: x509.Certificate, sender: OrganId) -> bool:
        """The sender signed it, or a trusted axis of the sender's own province or ministry did."""
        uid = _uid(signer)
        organ = None if uid is None else _organ_or_none(uid)
        if organ is None:
            return False
        if organ == sender:
            return True
        return str(organ) in self._policy.trusted_axes and organ.top == sender.top

    def refuse_fan_out(self, copies: int, size: int) -> None:
        """Each recipient is a copy to keep and deliver: bound how many, and how many bytes, one
        envelope may make (one 213 KB envelope to 2,000 codes made ~430 MB in RabbitMQ). *size* is
        what each copy carries: 0 for copies that carry a reference to the body store."""
        policy = self._policy
        if copies > policy.max_recipients:
            why = (
                f"the envelope names {copies} recipients; this axis accepts at most "
                f"{policy.max_recipients} per envelope (intake.max_recipients)"
            )
        elif copies * size > policy.max_fanout_bytes:
            why = (
                f"{copies} copies of {size:,} bytes make {copies * size:,} bytes; this axis accepts at "
                f"most {policy.max_fanout_bytes:,} per envelope (intake.max_fanout_bytes)"
            )
        else:
            return
        raise EnvelopeInvalidError(
            [
                Problem(
                    "too-many-recipients",
                    "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To",
                    f"{why}: every recipient is a copy to keep and deliver, so split the list, address "
                    "a unit instead of each of its agencies, or send the attachments separately",
                )
            ]
        )

    def refuse_unknown_local(
        self, message: DocumentEnvelope | StatusMessage, routed: Sequence[Destination]
    ) -> None:
        """A code of this province that no agency here has (nor had) is a mistake to report, not an
        address to relay to the national axis, which would only bounce it back."""
        province = self._node_id.top
        header = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
        problems = [
            Problem(
                "unknown-recipient",
                f"{header}/ResponseFor/OrganId"
                if isinstance(message, StatusMessage)
                else f"{header}/To[{position}]/OrganId",
                f"{d.addressed_to} is a code of this province ({province}) but no agency of this axis "
                "has it, now or formerly: check the code against GET /v1/agencies",
            )
            for position, d in enumerate(routed, start=1)
            if d.kind is DestinationKind.OUTBOUND and d.addressed_to.top == province
        ]
        if problems:
            raise EnvelopeInvalidError(problems)

    def codes(self, organ: OrganId) -> list[str]:
        """An agency's code and its former codes (a delivery may be addressed to either)."""
        agency = self._topology.agency(organ)
        return [str(organ)] if agency is None else [str(agency.organ_id), *map(str, agency.aliases)]


def _organ_or_none(text: str) -> OrganId | None:
    try:
        return OrganId.parse(text)
    except ValueError:
        return None


def _uid(certificate: x509.Certificate) -> str | None:
    uids = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(uids[0].value) if uids else None
