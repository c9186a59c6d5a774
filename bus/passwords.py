"""Operators' password hashes: scrypt (RFC 7914) with a random salt per user, kept in the settings as
``scrypt$<n>$<r>$<p>$<salt base64>$<hash base64>`` (made by ``bus operator-password``).

The parameters travel in the string, so stronger ones can be chosen later without breaking the hashes
already configured; :func:`parse_password_hash` bounds them, so a hand-edited file cannot make every
login cost gigabytes. Comparison is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["PasswordHash", "hash_password", "parse_password_hash", "verify_password"]

# n = 2**15, r = 8: 32 MiB and some 50-100 ms per check (OWASP's scrypt minimum is n = 2**17 with
# r = 8 at p = 1 for interactive logins on dedicated hardware; a bus node serves documents first).
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**15, 8, 1
MAX_N, MAX_R, MAX_P = 2**20, 32, 16
SALT_BYTES, HASH_BYTES = 16, 32
MAX_PASSWORD_CHARS = 1024  # longer input is refused before hashing: scrypt's cost must stay bounded
_SCHEME = "scrypt"


@dataclass(frozen=True, slots=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{_SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def _derive(password: str, *, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # scrypt needs 128 * r * n bytes (plus a little); hashlib refuses anything above maxmem.
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=129 * r * n + 1024 * 1024, dklen=length
    )


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """The string to put in ``dashboard.operators[].password_hash``."""
    if not password:
        raise ValueError("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"the password has more than {MAX_PASSWORD_CHARS} characters")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(password, n=n, r=r, p=p, salt=salt, length=HASH_BYTES)
    return str(PasswordHash(n, r, p, salt, digest))


def parse_password_hash(value: str) -> PasswordHash:
    """Read a hash string; :class:`ValueError` says what is wrong with it (never echoes the hash)."""
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError("not a password hash of `bus operator-password` (scrypt$n$r$p$salt$hash)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("the password hash has a malformed number or base64 field") from exc
    if n < 2 or n & (n - 1) or n > MAX_N:
        raise ValueError(f"scrypt n must be a power of two between 2 and {MAX_N}, not {n}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise ValueError(f"scrypt r must be 1-{MAX_R} and p 1-{MAX_P}")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the password hash's salt or digest is too short")
    return PasswordHash(n, r, p, salt, digest)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether *password* matches; the digest comparison takes the same time wherever they differ."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    derived = _derive(
        password, n=stored.n, r=stored.r, p=stored.p, salt=stored.salt, length=len(stored.digest)
    )
    return hmac.compare_digest(derived, stored.digest)
