"""A stricter axis, on request: a freshness window on ``XroadVnpt-timestamp`` and a memory of the
requests already seen (faults ``freshness_window_s`` and ``nonce_memory``, both off by default).

Whether the real axis checks either is unknown (protocol notes §4 [?]). The SDK stamps a request once,
when its service object is built (§2, §6): a long-lived service object sends an old timestamp on
every call, and two identical calls with the very same signed headers. So the mock accepts both by
default, and an integrator switches these on to see whether a client survives an axis that does not.

The nonce is the request's signature, ``XroadVnpt-hash-header``: the HMAC over every signed header,
the timestamp included. The same request signed again with another timestamp is a new nonce;
another request with the same timestamp is too; only a byte-identical signed header set is a replay.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable

from adapters.national_axis.protocol import AuthFailure, SignedRequest
from mock_axis.config import MockFaults
from mock_axis.times import sdk_time

__all__ = ["MAX_REMEMBERED", "RequestGuard"]

# Without a freshness window nothing ages out of the memory; it keeps this many, oldest dropped first.
MAX_REMEMBERED = 100_000


class RequestGuard:
    """Checks an authenticated request against the switched-on faults; one per running mock."""

    def __init__(self, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], dt.datetime] = OrderedDict()

    def check(self, signed: SignedRequest, signature: bytes, faults: MockFaults) -> None:
        """:class:`AuthFailure` when *signed* is too old or too new for the freshness window, or
        when its *signature* (``XroadVnpt-hash-header``) was seen before under ``nonce_memory``."""
        now = self._clock()
        window = faults.freshness_window_s
        if window:
            self._fresh(signed.timestamp, now, window)
        if not faults.nonce_memory:
            self._seen.clear()  # switched off: a later switch-on starts with an empty memory
            return
        self._forget_before(now - dt.timedelta(seconds=2 * window) if window else None)
        nonce = (signed.system_id, signature.strip().lower().decode("ascii", "replace"))
        if nonce in self._seen:
            first = self._seen[nonce].isoformat(timespec="seconds")
            raise AuthFailure(
                f"replayed request: the same signed headers (timestamp {signed.timestamp}) were "
                f"accepted at {first}; this axis accepts each request once (fault nonce_memory)"
            )
        self._seen[nonce] = now

    @staticmethod
    def _fresh(timestamp: str, now: dt.datetime, window: float) -> None:
        try:
            stamped = sdk_time(timestamp)
        except ValueError as exc:
            raise AuthFailure(
                f"timestamp {timestamp!r} is not ddMMyyyy'T'HHmmss+SSSS in Vietnam's time, "
                f"and this axis checks it (fault freshness_window_s = {window:g})"
            ) from exc
        age = (now - stamped).total_seconds()
        if abs(age) <= window:
            return
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s ahead of the axis's clock"
        raise AuthFailure(
            f"timestamp {timestamp} is {when}; this axis accepts {window:g} s either way "
            "(fault freshness_window_s)"
        )

    def _forget_before(self, horizon: dt.datetime | None) -> None:
        # A request first seen before the horizon (twice the window ago) carries a timestamp the
        # window refuses anyway; without a window, the memory is bounded by its size.
        while self._seen:
            nonce, seen = next(iter(self._seen.items()))
            if (horizon is not None and seen < horizon) or len(self._seen) >= MAX_REMEMBERED:
                del self._seen[nonce]
            else:
                break
