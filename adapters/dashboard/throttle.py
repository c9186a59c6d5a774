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
A counter is forgotten ``forget_s`` after its last failure.

Where the counters live (issue 14, item 4: N ``bus serve`` processes behind one address act as one
service):

* given a *store* (:class:`FailureStore`: the status store, adapters/store/login_failures.py), in the
  database every gateway shares: failures counted by one are seen by all, each change is one atomic
  statement (a burst spread over the gateways is still throttled as if its tries came one after
  another, and the check that refuses a try is the statement that would count it), and the clock is
  the wall clock (``time.time``: the gateways' times are compared). Rows of forgotten counters are
  deleted now and then; ``max_entries`` does not apply (the database holds them);
* without one, in this process's memory, at most ``max_entries`` per kind (the least recently failed
  go first), on a monotonic clock: each process counts on its own (tests, and a single gateway).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from bus.errors import StoreError

__all__ = ["FailureStore", "LoginThrottle", "ThrottlePolicy", "client_key"]

log = structlog.get_logger("bus.dashboard")


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
    # Counters kept per kind (addresses, names) in memory; bounds it under a spray of made-up names.
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


class FailureStore(Protocol):
    """Where a shared throttle counts: the status store (adapters/store/login_failures.py has what each
    method does). *kind* is ``"client"`` or ``"name"``; times are UTC."""

    async def add_login_failure(
        self,
        kind: str,
        key: str,
        at: dt.datetime,
        *,
        forget_before: dt.datetime,
        waits: Sequence[dt.timedelta] = (),
    ) -> tuple[int, dt.datetime] | None: ...

    async def take_back_login_failure(self, kind: str, key: str) -> None: ...

    async def read_login_failures(
        self, kind: str, key: str, *, forget_before: dt.datetime
    ) -> tuple[int, dt.datetime] | None: ...

    async def keys_with_login_failures(self, kind: str, *, forget_before: dt.datetime) -> int: ...

    async def forget_login_failures(self, before: dt.datetime) -> int: ...


_CLIENT, _NAME = "client", "name"  # the store's kinds of counter
_FORGET_EVERY_S = 60.0  # how often a shared throttle deletes the store's forgotten counters


class _Done:
    """What :meth:`LoginThrottle.succeeded` returns when it is done already."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


class LoginThrottle:
    """Admits login tries (see the module's docstring). *clock* is seconds: monotonic without a
    *store*, the wall clock (seconds since the epoch) with one; *sleep* is how a slowed try waits
    (tests pass fakes of both). *store* shares the counters with every gateway."""

    def __init__(
        self,
        policy: ThrottlePolicy | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store: FailureStore | None = None,
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._store = store
        self._clock = clock or (time.monotonic if store is None else time.time)
        self._sleep = sleep
        self._clients = _Failures(self.policy)
        self._names = _Failures(self.policy)
        self._waits = _waits(self.policy)
        self._taking_back: set[asyncio.Task[None]] = set()
        self._forgot_at: float | None = None

    @staticmethod
    def _name_key(username: str) -> str:
        # A digest: a name can be 16 KB (the form's limit), a counter's key stays 64 characters.
        return hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()

    def _wait_after(self, count: int) -> float:
        """How long an address of *count* failures waits after its last one (0: none)."""
        policy = self.policy
        if count < policy.free_failures:
            return 0.0
        return min(policy.first_wait_s * 2.0 ** min(count - policy.free_failures, 32), policy.max_wait_s)

    def _delay_after(self, count: int) -> float:
        policy = self.policy
        if count < policy.slow_after:
            return 0.0
        # The exponent is bounded: a name under attack for weeks counts more failures than a float holds.
        doubled = policy.first_delay_s * 2.0 ** min(count - policy.slow_after, 32)
        return min(doubled, policy.max_delay_s)

    # -- in this process's memory (no store) ---------------------------------------------------------

    def _in_memory(self) -> tuple[_Failures, _Failures]:
        if self._store is not None:
            raise RuntimeError("this throttle counts in the store: use its async methods")
        return self._clients, self._names

    def refused_for(self, client: str | None) -> int:
        """Seconds this client's address must still wait before its next try (0: it may try now).
        Without a store only (:meth:`client_wait_s` either way)."""
        clients, _ = self._in_memory()
        now = self._clock()
        count, last = clients.get(client_key(client), now)
        if count < self.policy.free_failures:
            return 0
        return max(0, math.ceil(last + self._wait_after(count) - now))

    def delay_s(self, username: str) -> float:
        """How long a try on *username* waits before its password is checked. Without a store only
        (:meth:`name_delay_s` either way)."""
        _, names = self._in_memory()
        count, _ = names.get(self._name_key(username), self._clock())
        return self._delay_after(count)

    def counters(self) -> tuple[int, int]:
        """(addresses, names) counted now: for tests and bounds. Without a store only
        (:meth:`counted` either way)."""
        clients, names = self._in_memory()
        return len(clients), len(names)

    # -- either way -----------------------------------------------------------------------------------

    async def admit(self, username: str, client: str | None) -> int:
        """0 when the try may go on: it is then counted as a failure until :meth:`succeeded`, and has
        waited first if its name is under attack. Otherwise the seconds the client's address must still
        wait: the try is refused and counts for nothing."""
        if self._store is None:
            # Nothing awaited between the check and the count: a burst is counted one try at a time.
            if (wait_s := self.refused_for(client)) > 0:
                return wait_s
            delay = self.delay_s(username)
            now = self._clock()
            self._clients.add(client_key(client), now)
            self._names.add(self._name_key(username), now)
        else:
            wait_s, delay = await self._admit_shared(self._store, username, client)
            if wait_s > 0:
                return wait_s
        if delay > 0:
            await self._sleep(delay)
        return 0

    def succeeded(self, username: str, client: str | None) -> Awaitable[None]:
        """The try's password was right: take back the failure :meth:`admit` counted, nothing more.
        Without a store it is done on return; with one, a write under way, which the caller should
        await (one that does not still has it done: this throttle's next call waits for it)."""
        if self._store is None:
            self._clients.take_back(client_key(client))
            self._names.take_back(self._name_key(username))
            return _Done()
        task = asyncio.create_task(self._take_back(self._store, username, client))
        self._taking_back.add(task)
        task.add_done_callback(self._taking_back.discard)
        return task

    async def client_wait_s(self, client: str | None) -> int:
        """Seconds this client's address must still wait before its next try (0: it may try now)."""
        if self._store is None:
            return self.refused_for(client)
        at, forget_before = await self._now()
        counted = await self._store.read_login_failures(
            _CLIENT, client_key(client), forget_before=forget_before
        )
        return 0 if counted is None else max(0, self._remaining(counted, at))

    async def name_delay_s(self, username: str) -> float:
        """How long a try on *username* waits before its password is checked."""
        if self._store is None:
            return self.delay_s(username)
        _, forget_before = await self._now()
        counted = await self._store.read_login_failures(
            _NAME, self._name_key(username), forget_before=forget_before
        )
        return 0.0 if counted is None else self._delay_after(counted[0])

    async def counted(self) -> tuple[int, int]:
        """(addresses, names) with failures now."""
        if self._store is None:
            return self.counters()
        _, forget_before = await self._now()
        return (
            await self._store.keys_with_login_failures(_CLIENT, forget_before=forget_before),
            await self._store.keys_with_login_failures(_NAME, forget_before=forget_before),
        )

    # -- in the store ---------------------------------------------------------------------------------

    async def _now(self) -> tuple[dt.datetime, dt.datetime]:
        """The time now, and before which a failure is forgotten, once this throttle's take-backs under
        way are written (its own successes count before what comes after them)."""
        if self._taking_back:
            await asyncio.gather(*list(self._taking_back), return_exceptions=True)
        at = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        try:
            return at, at - dt.timedelta(seconds=self.policy.forget_s)
        except OverflowError:  # a policy that never forgets
            return at, dt.datetime.min.replace(tzinfo=dt.UTC)

    def _remaining(self, counted: tuple[int, dt.datetime], at: dt.datetime) -> int:
        count, last = counted
        if count < self.policy.free_failures:
            return 0
        return math.ceil((last + dt.timedelta(seconds=self._wait_after(count)) - at).total_seconds())

    async def _admit_shared(
        self, store: FailureStore, username: str, client: str | None
    ) -> tuple[int, float]:
        """(seconds to wait, 0 when admitted; the admitted try's delay). The address's check and count
        are one statement, then the name's count: each atomic across gateways."""
        at, forget_before = await self._now()
        now = at.timestamp()
        if self._forgot_at is None or abs(now - self._forgot_at) >= _FORGET_EVERY_S:
            self._forgot_at = now
            await store.forget_login_failures(forget_before)
        address = client_key(client)
        counted = await store.add_login_failure(
            _CLIENT, address, at, forget_before=forget_before, waits=self._waits
        )
        if counted is None:  # still waiting: refused, and not counted
            now_counted = await store.read_login_failures(_CLIENT, address, forget_before=forget_before)
            # At least a second: the wait ended, or another gateway's success took a failure back,
            # between the two statements (rare; the next try is admitted).
            return max(1, 0 if now_counted is None else self._remaining(now_counted, at)), 0.0
        named = await store.add_login_failure(
            _NAME, self._name_key(username), at, forget_before=forget_before
        )
        failures = named[0] if named is not None else 1
        return 0, self._delay_after(failures - 1)  # the delay of the failures before this try

    async def _take_back(self, store: FailureStore, username: str, client: str | None) -> None:
        try:
            await store.take_back_login_failure(_CLIENT, client_key(client))
            await store.take_back_login_failure(_NAME, self._name_key(username))
        except StoreError as exc:  # a failure too many stays counted until it is forgotten
            log.warning("dashboard.login_take_back_failed", error=str(exc))


def _waits(policy: ThrottlePolicy) -> list[dt.timedelta]:
    """How long an address of n failures waits after its last one, n = 0, 1 … (the last for more):
    what :meth:`LoginThrottle._wait_after` says, for the store's single statement."""
    waits = [dt.timedelta(0)] * max(policy.free_failures, 0)
    for doubling in range(33):  # the exponent is bounded at 32, as in _wait_after
        wait = min(policy.first_wait_s * 2.0**doubling, policy.max_wait_s)
        waits.append(dt.timedelta(seconds=wait))
        if wait >= policy.max_wait_s:
            break
    return waits
