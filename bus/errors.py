"""Errors of the exchange bus.

Every error the bus raises on purpose derives from :class:`BusError`::

    BusError
    ├── InputError (ValueError)          the input is bad: fix the input, not the bus
    │   ├── UnsafeXmlError               DTD, entity, oversized or too deep XML: refused before use
    │   │   └── XmlTooLargeError         over the size limit (the API's 413 too-large)
    │   ├── MalformedXmlError            not well-formed XML, or not UTF-8
    │   ├── InvalidOrganIdError          an OrganId that is not V.Z.Y.MXX
    │   ├── EnvelopeInvalidError         schema or business checks failed; carries every problem
    │   ├── ForgedSenderError            From is not the authenticated agency
    │   ├── DuplicateEnvelopeError       the same (sender, DocumentId, business type) was accepted before
    │   ├── UnknownDocumentError         concerns a document this axis never carried
    │   ├── PoisonMessageError           a broker message without the bus's headers: dead-lettered
    │   ├── BadAcknowledgementError      not processing, done or fail; a fail without its reason (400)
    │   ├── AlreadyFinalError            acknowledged done or fail before: it cannot reopen (409)
    │   └── SignatureError               missing, broken, forged or untrusted signature
    │       ├── SignatureMissingError
    │       ├── WeakAlgorithmError       SHA-1 (or another refused algorithm) without an opt-in
    │       └── CertificateError         chain, validity or usage of the signer's certificate
    │           └── CertificateRevokedError  on its CA's CRL (serial, date, reason, CA)
    ├── RevocationUnknownError           a CRL is stale or unreachable: temporary, retry later (503)
    ├── CrlFetchError                    a CRL could not be downloaded or read: retried by the refresher
    ├── AuthError (bus.auth)             an agency API request is not authentic; ``code`` says why (401)
    ├── ApiError (adapters.http.errors)  the agency API refuses a request: its HTTP status and code
    ├── ApiFailure (adapters.http.client)  the agency API answered with an error (the client's side)
    ├── ConfigError                      a configuration or topology file is wrong
    │   └── CrlUnusableError             a CRL that is not its CA's, a delta, older than the one held
    ├── BrokerError                      the message broker refused or lost a publish: retry later
    │   └── UnroutableError              no queue is bound for the routing key (never a silent drop)
    ├── StoreError                       the status store failed a read or a write (the database's error)
    │   └── StoreUnavailableError        the database cannot be reached or the connection dropped: retry
    └── AxisError                        the national axis did not do what was asked
        ├── AxisUnavailableError         temporary: timeout, refused connection, 5xx
        ├── AxisRejectedError            permanent: the axis answered and refused
        ├── AuthFailure                  the axis protocol: a request's signed headers do not verify
        │                                (adapters.national_axis.protocol)
        └── Refusal                      the mock axis answers FAIL with an ErrorCode (mock_axis.sending)

The CLI maps ``InputError`` to exit status 1 and ``ConfigError`` to 2 (usage). The agency API answers
each error with the HTTP status and code that one table gives its type (``ANSWERS`` in
:mod:`adapters.http.errors`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AlreadyFinalError",
    "AxisError",
    "AxisRejectedError",
    "AxisUnavailableError",
    "BadAcknowledgementError",
    "BrokerError",
    "BusError",
    "CertificateError",
    "CertificateRevokedError",
    "ConfigError",
    "CrlFetchError",
    "CrlUnusableError",
    "DuplicateEnvelopeError",
    "EnvelopeInvalidError",
    "ForgedSenderError",
    "InputError",
    "InvalidOrganIdError",
    "MalformedXmlError",
    "PoisonMessageError",
    "Problem",
    "RevocationUnknownError",
    "SignatureError",
    "SignatureMissingError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownDocumentError",
    "UnroutableError",
    "UnsafeXmlError",
    "WeakAlgorithmError",
    "XmlTooLargeError",
]


class BusError(Exception):
    """Root of every error the bus raises on purpose."""


class InputError(BusError, ValueError):
    """The input is bad; the bus is fine and keeps serving."""


class UnsafeXmlError(InputError):
    """XML refused before use: DTD, entities, too large or too deeply nested."""


class XmlTooLargeError(UnsafeXmlError):
    """Larger than the size limit: refused unread. Its own type so that the API answers 413 by type, not
    by the wording of the message."""


class MalformedXmlError(InputError):
    """Not well-formed XML, or not encoded as UTF-8."""


class InvalidOrganIdError(InputError):
    """An organisation identifier that does not follow V.Z.Y.MXX (QCVN 102:2016)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an envelope, where it is and what to do about it.

    ``path`` is an element path such as ``/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To[2]/OrganId``
    (namespace prefixes left out, positions 1-based as in XPath); ``line`` is the source line when known.
    ``code`` is a short machine-readable name, stable across releases.
    """

    code: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class EnvelopeInvalidError(InputError):
    """The envelope failed schema or business checks; ``problems`` lists every one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(
            f"envelope rejected with {len(self.problems)} problem(s): "
            + "; ".join(str(p) for p in self.problems)
        )


class SignatureError(InputError):
    """The signature is missing, broken, forged or made with a refused algorithm or certificate."""


class SignatureMissingError(SignatureError):
    """No XML signature where one is required."""


class WeakAlgorithmError(SignatureError):
    """A refused algorithm (SHA-1 unless opted in for a named legacy sender)."""


class CertificateError(SignatureError):
    """The signer's certificate does not chain to a trusted CA, is expired, or may not sign."""


class ConfigError(BusError):
    """A configuration or topology file is wrong; the message names the field and the reason."""


class BrokerError(BusError):
    """The broker did not confirm a publish (nack, closed channel, lost connection): nothing is accepted."""


class UnroutableError(BrokerError):
    """A mandatory publish came back: no queue is bound for its routing key."""


class ForgedSenderError(InputError):
    """The envelope's From/OrganId is not the agency that authenticated the request."""


class DuplicateEnvelopeError(InputError):
    """Already accepted: ``bus_id`` names the earlier acceptance (HTTP 409)."""

    def __init__(self, bus_id: str, message: str) -> None:
        self.bus_id = bus_id
        super().__init__(message)


class UnknownDocumentError(InputError):
    """The envelope concerns a document this axis never carried, and cannot be delivered without it."""


class PoisonMessageError(InputError):
    """A message on a bus queue that the bus did not write: its ``x-bus-*`` headers or message id are
    missing or malformed. It goes to the dead-letter queue with this reason, never back to its queue."""


class BadAcknowledgementError(InputError):
    """An inbox acknowledgement that is not ``processing``, ``done`` or ``fail`` with at most a short
    reason, or a ``fail`` without its reason (:mod:`bus.access`)."""


class AlreadyFinalError(InputError):
    """The envelope was acknowledged ``done`` or ``fail`` before: a different acknowledgement cannot
    reopen it (:func:`bus.access.confirm_acknowledged`)."""


class AxisError(BusError):
    """The national axis did not do what was asked."""


class AxisUnavailableError(AxisError):
    """Temporary: a timeout, a refused connection, a 5xx, an unreadable answer. Worth retrying later."""


class AxisRejectedError(AxisError):
    """Permanent: the axis answered and refused (``status FAIL`` with a reason, or a 4xx)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"national axis refused it (ErrorCode {code}): {description}")
        self.code = code
        self.description = description


# -- certificate revocation (issue 10) ------------------------------------------------------------------


class CertificateRevokedError(CertificateError):
    """A certificate of the chain is on its CA's CRL; the message gives its serial, the revocation date and
    reason, and the CA."""

    def __init__(
        self, message: str, *, serial: int, revoked_at: dt.datetime, reason: str, issuer: str
    ) -> None:
        super().__init__(message)
        self.serial = serial
        self.revoked_at = revoked_at
        self.reason = reason  # RFC 5280 CRLReason name: keyCompromise, superseded, … or unspecified
        self.issuer = issuer


class RevocationUnknownError(BusError):
    """A certificate's revocation status cannot be established (its CA's CRL is stale, unreachable or
    unusable) and the deployment's policy is to refuse (``revocation.on_unavailable = "refuse"``).

    Temporary, and not the sender's fault: nothing is wrong with the envelope as far as anyone knows.
    The API answers 503 (send it again later) and relay-in leaves the envelope at the national axis
    for its next poll, instead of refusing it or dead-lettering it as bad input."""


class CrlFetchError(BusError):
    """A CRL could not be downloaded or read (temporary: the refresher retries, the CRL held stays)."""


class CrlUnusableError(ConfigError):
    """A CRL that cannot be used: unreadable, not signed by its CA, a delta or partitioned CRL, no
    nextUpdate, or older than the CRL already held."""


# -- the status store (issue 11) ------------------------------------------------------------------------


class StoreError(BusError):
    """The status store failed a read or a write. The store raises it in place of SQLAlchemy's and the
    database driver's errors (``raise ... from exc``), so that no caller sees them; the message names
    the database (without its password) and the driver's error."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached, or the connection dropped: temporary, worth retrying later.
    Check that the database runs and that ``[database] url`` points at it."""
