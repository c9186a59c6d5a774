"""Operators' logins and sessions: a signed cookie, a CSRF token, and the password check.

The session lives in the cookie itself (nothing to share between ``bus serve`` processes)::

    base64url(JSON {"u": username or null, "c": csrf, "e": expiry, "p": password tag}) "." base64url(HMAC)

HMAC-SHA256 under a key derived from ``dashboard.session_secret``; verified in constant time. The
expiry is inside the signed part, so a browser that keeps the cookie longer gains nothing. ``p`` ties the
session to the operator's current password hash: changing a password (or removing the operator) ends
that operator's sessions. A visitor who has not logged in gets a session with ``u`` null, only to carry
the CSRF token of the login form.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bus.errors import ConfigError
from bus.passwords import PasswordHash, hash_password, parse_password_hash, verify_password
from bus.settings import DashboardSettings

__all__ = ["COOKIE", "Operators", "Session", "SessionCodec", "SessionState"]

COOKIE = "bus_dashboard"
ANONYMOUS_TTL_S = 3600  # the login form's CSRF token


class SessionState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    ABSENT = "absent"  # no cookie, or one that is not ours (bad signature, unknown operator, old password)


@dataclass(frozen=True, slots=True)
class Session:
    username: str | None
    csrf: str
    expires: int  # seconds since the epoch

    @property
    def logged_in(self) -> bool:
        return self.username is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Operators:
    """The configured operators and the password check."""

    def __init__(self, settings: DashboardSettings) -> None:
        self._hashes: dict[str, PasswordHash] = {o.username: o.hash for o in settings.operators}
        self._raw = {o.username: o.password_hash for o in settings.operators}
        # An unknown username is checked against this, so that it costs what a wrong password costs:
        # the time taken must not tell which of the two was wrong.
        first = next(iter(self._hashes.values()), None)
        cost = {"n": first.n, "r": first.r, "p": first.p} if first else {}
        self._decoy = parse_password_hash(hash_password(secrets.token_urlsafe(16), **cost))

    def password_hash(self, username: str) -> str | None:
        return self._raw.get(username)

    async def check(self, username: str, password: str) -> bool:
        """True only for a configured operator with that password (scrypt runs off the event loop)."""
        stored = self._hashes.get(username)
        matched = await asyncio.to_thread(verify_password, password, stored or self._decoy)
        return matched and stored is not None


class SessionCodec:
    """Makes and reads session cookies; *clock* is the time sessions expire by."""

    def __init__(
        self, settings: DashboardSettings, operators: Operators, clock: Callable[[], dt.datetime]
    ) -> None:
        if settings.session_secret is None:
            raise ConfigError("the dashboard needs dashboard.session_secret (BUS_DASHBOARD__SESSION_SECRET)")
        secret = settings.session_secret.get_secret_value().encode("utf-8")
        # A key of its own, so that the secret is never used directly for anything else.
        self._key = hmac.new(secret, b"bus-dashboard-session-v1", hashlib.sha256).digest()
        self._ttl_s = settings.session_ttl_s
        self._operators = operators
        self._clock = clock

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def _now(self) -> int:
        return int(self._clock().timestamp())

    def _password_tag(self, username: str | None) -> str:
        if username is None:
            return ""
        password_hash = self._operators.password_hash(username) or ""
        return _b64(hmac.new(self._key, password_hash.encode("utf-8"), hashlib.sha256).digest()[:12])

    def new(self, username: str | None) -> Session:
        """A fresh session (and CSRF token): for a visitor (None), or an operator who just logged in."""
        ttl = self._ttl_s if username is not None else ANONYMOUS_TTL_S
        return Session(username, secrets.token_urlsafe(24), self._now() + ttl)

    def encode(self, session: Session) -> str:
        payload = {
            "u": session.username,
            "c": session.csrf,
            "e": session.expires,
            "p": self._password_tag(session.username),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def decode(self, cookie: str | None) -> tuple[SessionState, Session | None]:
        """The session in *cookie*: VALID with it, EXPIRED (signed by us, but too old), or ABSENT."""
        if not cookie or len(cookie) > 1024:
            return SessionState.ABSENT, None
        body, _, signature = cookie.partition(".")
        try:
            if not hmac.compare_digest(self._sign(body).encode("ascii"), signature.encode("utf-8")):
                return SessionState.ABSENT, None
            data = json.loads(_unb64(body))
        except (ValueError, UnicodeError, binascii.Error):  # not even ASCII, or not base64/JSON
            return SessionState.ABSENT, None
        if not isinstance(data, dict):
            return SessionState.ABSENT, None
        username, csrf, expires = data.get("u"), data.get("c"), data.get("e")
        if not isinstance(csrf, str) or not isinstance(expires, int):
            return SessionState.ABSENT, None
        if username is not None:
            if not isinstance(username, str) or self._operators.password_hash(username) is None:
                return SessionState.ABSENT, None
            if not hmac.compare_digest(str(data.get("p", "")), self._password_tag(username)):
                return SessionState.ABSENT, None
        if expires <= self._now():
            return SessionState.EXPIRED, None
        return SessionState.VALID, Session(username, csrf, expires)

    def seal(self, session: Session, purpose: str, text: str) -> str:
        """A signature of *text* for this session only (its CSRF token is in it): what a page hands
        to the next one (the confirmed dead letters, a replay's outcome) comes back unchanged."""
        message = f"{purpose}\x00{session.csrf}\x00{text}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def seal_ok(self, session: Session, purpose: str, text: str, submitted: str) -> bool:
        return hmac.compare_digest(
            self.seal(session, purpose, text).encode("ascii"), submitted.encode("utf-8", "replace")
        )

    def csrf_ok(self, session: Session | None, submitted: str | None) -> bool:
        """The token of a submitted form against the session's (constant-time)."""
        if session is None or not submitted:
            return False
        return hmac.compare_digest(session.csrf.encode("utf-8"), submitted.encode("utf-8"))
