"""Failed logins: an address that keeps failing must wait; a name that keeps failing is only slowed.

Issue 10, item 8: the first version also refused (429) every try on a name with four failures, the
right password included, so anyone who knew an operator's name could lock that operator out. Now:

* **per client address** (an IPv6 client by its /64, which one machine usually holds whole): after
  ``free_failures`` failures, each further try must come ``first_wait_s``, then twice as long … at most
  ``max_wait_s`` after the address's last failure. A try that comes earlier is refused (429, with
  ``Retry-After``) and its password is not checked, so guessing from one address is slow.
* **per username**: after ``slow_after`` failures on a name, from any address, every try on that name
  (right or wrong) waits ``first_delay_s``, then twice as long … at most ``max_delay_s`` before its
  password is checked. It is never refused: someone else's failures cost the operator a few seconds,
  never the login.

A try counts as a failure from the moment it is admitted (a burst of concurrent tries is throttled as
if they came one after another) and is taken back when its password is right. A success clears nothing
else: an operator who knows their own password cannot wipe their address's failures on other names.
A counter is forgotten ``forget_s`` after its last failure. Counters live in this process's memory, at
most ``max_entries`` per kind (the least recently failed go first): each ``bus serve`` process counts
on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["LoginThrottle", "ThrottlePolicy", "client_key"]


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """The throttle's numbers (``docs/operations.md`` quotes them)."""

    # Per client address: failures allowed before the address must wait, then 2, 4, 8 … 300 s.
    free_failures: int = 4
    first_wait_s: float = 2.0
    max_wait_s: float = 300.0
    # Per username: failures (from anywhere) before each try on the name waits 1, 2, 4, 5, 5 … s.
    slow_after: int = 4
    first_delay_s: float = 1.0
    max_delay_s: float = 5.0
    # A counter with no failure for this long starts again from zero. An hour, not less: an address
    # that paused long enough to be forgotten after each ten tries would make more of them an hour.
    forget_s: float = 3600.0
    # Counters kept per kind (addresses, names); bounds memory under a spray of made-up names.
    max_entries: int = 10_000


def client_key(host: str | None) -> str:
    """The address a client is counted under: IPv4 as is, IPv6 by its /64 (one host usually has the
    whole /64 and could otherwise take a fresh address for every try), an IPv4-mapped one as IPv4."""
    if not host:
        return "-"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]  # not an IP address (a Unix socket's path): counted under its name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Failures:
    """Failures by key: (count, time of the last), oldest last failure first."""

    def __init__(self, policy: ThrottlePolicy) -> None:
        self._policy = policy
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _forget_old(self, now: float) -> None:
        while self._entries:
            _, (_, last) = next(iter(self._entries.items()))
            if now - last <= self._policy.forget_s:
                break
            self._entries.popitem(last=False)

    def get(self, key: str, now: float) -> tuple[int, float]:
        self._forget_old(now)
        return self._entries.get(key, (0, now))

    def add(self, key: str, now: float) -> None:
        self._forget_old(now)
        count, _ = self._entries.pop(key, (0, now))
        while len(self._entries) >= self._policy.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (count + 1, now)

    def take_back(self, key: str) -> None:
        count, last = self._entries.get(key, (0, 0.0))
        if count > 1:
            self._entries[key] = (count - 1, last)
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class LoginThrottle:
    """Admits login tries (see the module's docstring). *clock* is monotonic seconds; *sleep* is how
    a slowed try waits (tests pass fakes of both)."""

    def __init__(
        self,
        policy: ThrottlePolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock, self._sleep = clock, sleep
        self._clients = _Failures(self.policy)
        self._names = _Failures(self.policy)

    @staticmethod
    def _name_key(username: str) -> str:
        # A digest: a name can be 16 KB (the form's limit), a counter's key stays 64 characters.
        return hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()

    def refused_for(self, client: str | None) -> int:
        """Seconds this client's address must still wait before its next try (0: it may try now)."""
        policy, now = self.policy, self._clock()
        count, last = self._clients.get(client_key(client), now)
        if count < policy.free_failures:
            return 0
        wait = min(policy.first_wait_s * 2.0 ** min(count - policy.free_failures, 32), policy.max_wait_s)
        return max(0, math.ceil(last + wait - now))

    def delay_s(self, username: str) -> float:
        """How long a try on *username* waits before its password is checked."""
        policy = self.policy
        count, _ = self._names.get(self._name_key(username), self._clock())
        if count < policy.slow_after:
            return 0.0
        # The exponent is bounded: a name under attack for weeks counts more failures than a float holds.
        doubled = policy.first_delay_s * 2.0 ** min(count - policy.slow_after, 32)
        return min(doubled, policy.max_delay_s)

    async def admit(self, username: str, client: str | None) -> int:
        """0 when the try may go on: it is then counted as a failure until :meth:`succeeded`, and has
        waited first if its name is under attack. Otherwise the seconds the client's address must still
        wait: the try is refused and counts for nothing."""
        if (wait_s := self.refused_for(client)) > 0:
            return wait_s
        delay = self.delay_s(username)
        now = self._clock()
        self._clients.add(client_key(client), now)
        self._names.add(self._name_key(username), now)
        if delay > 0:
            await self._sleep(delay)
        return 0

    def succeeded(self, username: str, client: str | None) -> None:
        """The try's password was right: take back the failure :meth:`admit` counted, nothing more."""
        self._clients.take_back(client_key(client))
        self._names.take_back(self._name_key(username))

    def counters(self) -> tuple[int, int]:
        """(addresses, names) counted now: for tests and bounds."""
        return len(self._clients), len(self._names)
